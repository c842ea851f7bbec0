"""Model registry and backends.

Model developers describe a model with a declarative card (`card.py`); the
registry (`registry.py`) stores validated cards; backends load and call a registered
model as a black box (`backend.py`: the interface; `diffusers_backend.py`: diffusers
pipelines; `loader.py`: `load_backend`, which picks the backend for a card);
`tiny.py` builds the offline tiny models the demo and tests run on.
"""
