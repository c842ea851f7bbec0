"""sdaas: Stable Diffusion as a Service with per-request latency and CLIP-score SLOs.

The bottom layer: records, errors, settings, request limits, job-request validation and
the privacy helpers every other package shares. It imports none of them (see
`tests/test_layers.py`); the command line is `cli/`.
"""

__version__ = "0.1.0"
