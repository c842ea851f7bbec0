"""The serving runtime (no Beam in it): the scheduling core's device engines, one per
device instance, running its segments a denoising step at a time and speaking only the
seam's commands and events (`scheduler/seam.py`); the links, calibration, outcome sinks
and the in-flight ledger around them. `pipelines/serving.py` is handed a runtime."""
