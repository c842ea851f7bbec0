"""Model registry and backends.

Model developers describe a model with a declarative card (`card.py`); the
registry (`registry.py`) stores validated cards; backends (`backend.py`,
`diffusers_backend.py`) load and call a registered model as a black box;
`tiny.py` builds the offline tiny models the demo and tests run on.
"""
