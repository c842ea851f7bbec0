"""Step-level batching of Stable Diffusion jobs: one UNet call per denoising step for
every in-flight job of a model, whatever each job's step count and progress.

The pipeline's `__call__` runs one request from noise to image. A device engine instead
needs the three parts diffusers' pipelines keep apart (`encode_prompt` +
`prepare_latents`, the denoising loop, `decode_latents`) so that jobs can join and leave
at step boundaries. Each `StepJob` keeps its own scheduler (timesteps, multistep
history, step index), its own generator and its own text embeddings; `step` stacks the
jobs' latents with a per-sample timestep tensor (UNet2DConditionModel accepts a (B,)
timestep) and hands each job its slice back. Classifier-free guidance as the pipeline
does it: [uncond, text] per job, `uncond + g * (text - uncond)`.

Same seed, same image as the job alone: only the batched convolutions may round
differently (tests/models/test_step_batch.py states and checks the tolerance).
Supported: StableDiffusionPipeline-like pipelines (SD 1.x/2.x and the tiny and toy-world
models) with first-order samplers. `supports(pipe)` says no for others (SDXL's added
conditioning, LCM's guidance embedding, Heun's two calls per step); the device engine
then runs them whole, one job per call.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image


def supports(pipe) -> bool:
    """Whether `pipe` can be stepped by `StepBatcher` (the SD 1.x/2.x call shape)."""
    need = ("encode_prompt", "prepare_latents", "unet", "vae", "image_processor")
    if not all(hasattr(pipe, n) for n in need):
        return False
    cfg = pipe.unet.config
    return (
        getattr(pipe.scheduler, "order", 1) == 1  # one UNet call per step (not Heun)
        and getattr(cfg, "time_cond_proj_dim", None) is None
        and getattr(cfg, "addition_embed_type", None) is None
        and not hasattr(pipe, "text_encoder_2")
    )


@dataclass(eq=False)
class StepJob:
    """One image in flight: its scheduler state, latents, embeddings and progress.
    `calls` counts UNet calls (for order-1 samplers one per requested step)."""

    steps: int
    scheduler: Any
    timesteps: torch.Tensor
    latents: torch.Tensor  # (1, C, h, w)
    embeds: torch.Tensor  # (2, L, D) [uncond, text], or (1, L, D) without guidance
    guidance: float
    extra: dict = field(default_factory=dict)  # the scheduler's step kwargs (generator, eta)
    done_calls: int = 0

    @property
    def calls(self) -> int:
        return len(self.timesteps)

    @property
    def finished(self) -> bool:
        return self.done_calls >= self.calls

    @property
    def shape(self) -> tuple:
        """Jobs batch together only when their latents have the same shape."""
        return tuple(self.latents.shape)


class StepBatcher:
    """Starts, steps and finishes `StepJob`s on one loaded pipeline. `make_view()`
    returns a per-call pipeline view (private scheduler, per-thread tokenizer: see
    models/diffusers_backend.py), so a batcher is as thread-safe as its backend."""

    def __init__(self, make_view, device: str):
        self.make_view = make_view
        self.device = device
        self._pipe = make_view()

    @torch.no_grad()
    def start(self, prompt: str, seed: int, steps: int, width: int, height: int,
              guidance: float) -> StepJob:  # fmt: skip
        """Encode the prompt, draw the seed's initial noise, set the job's timesteps:
        exactly what the pipeline does before its loop, for one image."""
        view = self.make_view()
        cfg = guidance > 1.0
        text, uncond = view.encode_prompt(prompt, self.device, 1, cfg, None)
        embeds = torch.cat([uncond, text]) if cfg else text
        sched = view.scheduler
        sched.set_timesteps(steps, device=self.device)
        generator = [torch.Generator("cpu").manual_seed(seed)]
        latents = view.prepare_latents(
            1, view.unet.config.in_channels, height, width, embeds.dtype, self.device, generator
        )
        extra = {}
        params = set(inspect.signature(sched.step).parameters)
        if "generator" in params:
            extra["generator"] = generator
        if "eta" in params:
            extra["eta"] = 0.0
        return StepJob(steps, sched, sched.timesteps, latents, embeds, guidance, extra)

    @torch.no_grad()
    def step(self, jobs: list[StepJob]) -> None:
        """One denoising step for every job: one UNet call over all of them."""
        if not jobs:
            return
        if len({j.shape for j in jobs}) > 1:
            raise ValueError("jobs of one step must have latents of one shape (resolution)")
        inputs, times, embeds, sizes = [], [], [], []
        for j in jobs:
            t = j.timesteps[j.done_calls]
            n = 2 if j.guidance > 1.0 else 1
            x = torch.cat([j.latents] * n)
            if hasattr(j.scheduler, "scale_model_input"):
                x = j.scheduler.scale_model_input(x, t)
            inputs.append(x)
            times.append(t.reshape(1).expand(n))
            embeds.append(j.embeds)
            sizes.append(n)
        unet = self._pipe.unet
        out = unet(
            torch.cat(inputs),
            torch.cat(times).to(self.device),
            encoder_hidden_states=torch.cat(embeds),
            return_dict=False,
        )[0]
        for j, noise in zip(jobs, out.split(sizes), strict=True):
            if j.guidance > 1.0:
                uncond, text = noise.chunk(2)
                noise = uncond + j.guidance * (text - uncond)
            t = j.timesteps[j.done_calls]
            j.latents = j.scheduler.step(noise, t, j.latents, **j.extra, return_dict=False)[0]
            j.done_calls += 1

    @torch.no_grad()
    def finish(self, jobs: list[StepJob]) -> list[Image.Image]:
        """Decode finished jobs' latents to images (one VAE call)."""
        vae = self._pipe.vae
        latents = torch.cat([j.latents for j in jobs])
        image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        return self._pipe.image_processor.postprocess(
            image, output_type="pil", do_denormalize=[True] * len(jobs)
        )
