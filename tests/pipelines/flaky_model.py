"""A model that fails on one step count: to test that a sweep survives a model raising."""

from __future__ import annotations

import os

from diffusers import StableDiffusionPipeline

FAIL_AT_STEPS = 3


class FlakyPipeline(StableDiffusionPipeline):
    def __call__(self, prompt=None, *args, num_inference_steps=50, **kwargs):
        if num_inference_steps == FAIL_AT_STEPS:
            # Echo the prompt, as a careless model might: the failure file must not keep it.
            raise RuntimeError(f"simulated device fault on {prompt!r}")
        return super().__call__(prompt, *args, num_inference_steps=num_inference_steps, **kwargs)


def factory(card, dtype):
    return FlakyPipeline.from_pretrained(os.environ["SDAAS_FLAKY_MODEL_PATH"], dtype=dtype)
