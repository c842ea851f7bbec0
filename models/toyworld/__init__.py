"""The toy world: a captioned synthetic world small enough to train real text-to-image
models and a CLIP on two CPU cores, so CLIP score genuinely depends on denoising steps.
`world.py` generates it; training (issue 4) builds on it."""
