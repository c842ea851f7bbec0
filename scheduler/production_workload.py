"""The production-like workload in the simulator: the requests of `production.py` as jobs
a reference cluster serves.

* Checkpoints: the long tail of 86 fine-tunes. Each is a model of its own (loaded,
  evicted and charged a cold start like any other) that serves one style,
  `ckpt-<rank>`, and costs what its base costs. ASSUMED: every SDXL_EVERY-th checkpoint
  by popularity is SDXL-based, the rest SD 1.5-based; each weighs its base's checkpoint
  in memory (a full fine-tune: nothing shared between checkpoints).
* Steps: the reference profiles stop at 50 steps; the rows are linear in steps by
  construction, so they are extended linearly to 100.
* CLIP: the SD 1.5 curve is calibrated on published quality-vs-steps data. DeepCache
  (arXiv 2312.00858, Tab. 3: SD 1.5, PLMS, COCO 2017 5k, CLIP ViT-g/14) gives 29.99 at
  25 steps and 30.30 at 50: quality still grows slowly where production asks (30
  steps), which the one-timescale ASSUMED curve (flat by 12 steps) misses. The curve
  here adds a slow term (tau 20 steps) through those two points to the fast one. SDXL
  keeps its curve: PATS (SDXL + DDIM) is flat from 8 to 80 steps.
* A user states a latency SLO and a min CLIP, not steps (the convention of recent
  diffusion-serving papers): the SLO is a scale, uniform in SLO_SCALE, of the job's
  natural execution time at its requested steps on the cluster's fastest kind; the
  min CLIP is what those steps give for 99 % of prompts: the curve less the planner's
  CLIP margin (2.33 sigma of the CLIP noise), so the planner serves the steps asked,
  or fewer where the curve is flat.
* Images and LoRA: a request of k images runs as a batch of k (the base model's batch
  cost on its fastest kind) and a LoRA doubles the work: the class's `work_scale`.
"""

from __future__ import annotations

import math

import numpy as np

from scheduler.catalog import Catalog, load_catalog
from scheduler.production import Requests
from scheduler.simulator import SimConfig
from scheduler.workload import SloClass, Workload

MAX_STEPS = 100
SDXL_EVERY = 3  # ASSUMED: one checkpoint in three is SDXL-based
SLO_SCALE = (1.2, 5.0)
# SD 1.5 CLIP by steps: c_inf - A exp(-(s-1)/3.72) - B exp(-(s-1)/20), through the
# ASSUMED curve's 1-step value (21.1) and DeepCache's 29.99 (25) and 30.30 (50)
SD15_CURVE = {"c_inf": 30.42, "fast": (7.88, 3.72), "slow": (1.44, 20.0)}


def sd15_clip(steps: np.ndarray) -> np.ndarray:
    c = SD15_CURVE
    (a, ta), (b, tb) = c["fast"], c["slow"]
    s = np.asarray(steps, float) - 1
    return c["c_inf"] - a * np.exp(-s / ta) - b * np.exp(-s / tb)


def _extend(lat: np.ndarray) -> np.ndarray:
    """A latency row on 1..MAX_STEPS: linear beyond its last finite step, from the
    slope of its last ten."""
    out = lat.copy()
    finite = np.flatnonzero(np.isfinite(lat))
    last = finite[-1]
    if last + 1 < len(lat) and last >= 10:
        slope = (lat[last] - lat[last - 10]) / 10
        out[last + 1 :] = lat[last] + slope * np.arange(1, len(lat) - last)
    return out


def production_catalog(
    kinds: list[str],
    checkpoints: int,
    *,
    residency: str = "memory",
    memory_gb: dict[str, float] | None = None,
) -> tuple[Catalog, list[str]]:
    """The catalog of `checkpoints` fine-tunes on `kinds`, and each one's base. Residency
    as `load_catalog` takes it: each checkpoint is the size of its base (a full
    fine-tune: UNet, text encoders and VAE of its own), each kind's budget the reference
    catalog's."""
    ref = load_catalog(kinds, max_steps=MAX_STEPS, residency=residency, memory_gb=memory_gb)
    grid = ref.steps
    bases = ["sdxl" if (r + 1) % SDXL_EVERY == 0 else "sd-1.5" for r in range(checkpoints)]
    models, styles, latency, factor, clip, load_s = [], {}, {}, {}, {}, {}
    for r, base in enumerate(bases):
        b = ref.models.index(base)
        name = f"ckpt-{r:02d}:{base}"
        models.append(name)
        styles[name] = (f"ckpt-{r}",)
        for k in range(len(kinds)):
            if ref.can_run(b, k):
                latency[(r, k)] = _extend(ref.latency[(b, k)])
                factor[(r, k)] = ref.batch_factor[(b, k)]
        served = np.zeros(len(grid), bool)
        for k in range(len(kinds)):
            if (r, k) in latency:
                served |= np.isfinite(latency[(r, k)])
        if base == "sd-1.5":
            curve = sd15_clip(grid)
        else:  # saturated where the reference rows end: flat beyond
            curve = ref.clip[b].copy()
            last = np.flatnonzero(np.isfinite(curve))[-1]
            curve[last + 1 :] = curve[last]
        clip[r] = np.where(served, curve, -np.inf)
        load_s[r] = ref.load_s[b]
    size_gb = {r: ref.size_gb[ref.models.index(b)] for r, b in enumerate(bases)} if (
        ref.by_memory) else {}  # fmt: skip
    cat = Catalog(models=models, kinds=list(kinds), styles=styles, steps=grid,
                  latency=latency, batch_factor=factor, clip=clip, load_s=load_s,
                  price_per_hour=ref.price_per_hour,
                  max_resident={} if ref.by_memory else ref.max_resident,
                  size_gb=size_gb, budget_gb=ref.budget_gb)  # fmt: skip
    return cat, bases


def production_jobs(
    catalog: Catalog,
    requests: Requests,
    rng: np.random.Generator,
    *,
    pred_error: float = 0.1,
    clip_margin: float = SimConfig.clip_margin,
) -> Workload:
    """One SLO class per request (its checkpoint's style, SLO and min CLIP, the work of
    its images and LoRA), and the truth draws, as `make_workload` draws them."""
    classes = []
    fastest: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for r in range(len(catalog.models)):
        rows = [k for k in range(len(catalog.kinds)) if catalog.can_run(r, k)]
        k = min(rows, key=lambda k: catalog.latency[(r, k)][29])
        fastest[r] = (catalog.latency[(r, k)], catalog.batch_factor[(r, k)])
    scales = rng.uniform(*SLO_SCALE, requests.n)
    for i in range(requests.n):
        r = int(requests.checkpoint[i])
        lat, factor = fastest[r]
        steps = int(min(requests.steps[i], np.flatnonzero(np.isfinite(lat))[-1] + 1))
        images = int(requests.images[i])
        batch = factor[images] if images < len(factor) and math.isfinite(factor[images]) else images
        work = float(batch) * (2.0 if requests.lora[i] else 1.0)
        natural = lat[steps - 1] * work
        min_clip = float(catalog.clip[r][steps - 1]) - clip_margin
        classes.append(SloClass(f"ckpt-{r}", float(scales[i] * natural), min_clip,
                                work_scale=work))  # fmt: skip
    n = requests.n
    factor = np.exp(rng.normal(-(pred_error**2) / 2, pred_error, n))
    return Workload("production", requests.arrival.astype(float), np.arange(n),
                    tuple(classes), factor, rng.normal(0, 1, n))  # fmt: skip
