"""sdaas: Stable Diffusion as a Service with per-request latency and CLIP-score SLOs.

This package is deliberately thin: the command line, settings, errors and the
privacy helpers that several top-level folders share. The work lives in
`models/`, `pipelines/`, `predictor/` and `scheduler/`.
"""

__version__ = "0.1.0"
