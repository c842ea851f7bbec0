"""The planner against real predictors (trained on the reference profiles)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from predictor.planner import ModelOption, Planner
from sdaas.errors import InvalidInputError

A100, H100, T4 = "cuda-NVIDIA A100", "cuda-NVIDIA H100", "cuda-NVIDIA T4"
R512 = ((512, 512),)


@pytest.fixture(scope="module")
def planner(latency_model, clip_model):
    options = [
        ModelOption("sd-1.5", "reference", ("photo", "anime"), 1, 50, R512, 7.5, (A100, H100, T4)),
        ModelOption(
            "sd-turbo", "reference", ("photo",), 1, 4, R512, 7.5, ("cuda-NVIDIA A100 (DiffServe)",)
        ),
        ModelOption(
            "sdxl",
            "reference",
            ("poster",),
            1,
            50,
            ((1024, 1024),),
            7.5,
            ("cuda-NVIDIA A100-SXM4-80GB",),
        ),
    ]
    return Planner(options, latency_model, clip_model)


def _brute_force(planner, style, slo, min_clip, backlog=None):
    """Independent answer: scan every candidate and step count."""
    t = planner.curves(style, (512, 512))
    clip = t.clip[list(planner_buckets()).index(12)]
    best = None
    for i, (o, acc) in enumerate(t.labels):
        for j, s in enumerate(t.steps):
            lat = t.latency[i, j] + (backlog or {}).get(acc, 0.0)
            if math.isfinite(lat) and clip[i, j] >= min_clip and lat <= slo:
                key = (lat, -(clip[i, j] - min_clip))
                if best is None or key < best[0]:
                    best = (key, o.name, acc, int(s))
                break  # first step meeting min_clip is the cheapest on this curve
    return best


def planner_buckets():
    from predictor.planner import TOKEN_BUCKETS

    return TOKEN_BUCKETS


def test_curves_are_monotone(planner):
    t = planner.curves("photo", (512, 512))
    for row in t.latency:
        finite = row[np.isfinite(row)]
        assert (np.diff(finite) > 0).all()
    for row in t.clip[0]:
        finite = row[np.isfinite(row)]
        assert (np.diff(finite) >= -1e-9).all()


@pytest.mark.parametrize(
    ("slo", "min_clip"), [(5.0, 25.0), (1.0, 28.0), (0.5, 20.0), (3.0, 30.5), (10.0, 26.0)]
)
def test_feasible_plans_are_the_shortest_job(planner, slo, min_clip):
    plan = planner.plan("photo", slo, min_clip, job_id="j1")
    expect = _brute_force(planner, "photo", slo, min_clip)
    assert plan.feasible == (expect is not None)
    if expect:
        assert (plan.model, plan.accelerator, plan.steps) == expect[1:]
        assert plan.predicted_latency_s <= slo and plan.predicted_clip >= min_clip
        assert plan.job_id == "j1" and plan.reason == ""


def test_unreachable_clip_names_the_best_offer(planner):
    plan = planner.plan("anime", 100.0, 35.0)
    assert not plan.feasible
    assert plan.reason.startswith("min CLIP 35 unreachable for style anime: best ")
    assert "on sd-1.5" in plan.reason and plan.model == "sd-1.5"


def test_too_tight_latency_names_the_fastest_option(planner):
    plan = planner.plan("anime", 0.05, 28.0)
    assert not plan.feasible
    assert "needs" in plan.reason and "> 0.05 s" in plan.reason
    assert plan.predicted_latency_s > 0.05 and plan.predicted_clip >= 28.0


def test_a_rejection_states_the_queueing_and_the_run_time_apart(planner):
    alone = planner.plan("anime", 0.05, 28.0)
    everywhere = {a: 50.0 for o in planner.options for a in o.accelerators}
    waiting = planner.plan("anime", 0.05, 28.0, backlog_s=everywhere)
    run = waiting.predicted_latency_s
    assert "needs" in alone.reason and "queued" not in alone.reason  # no queue, no split
    assert f"(queued 50.00 s + run {run:.2f} s) > 0.05 s" in waiting.reason, waiting.reason


def test_backlog_moves_the_job_to_another_accelerator(planner):
    free = planner.plan("anime", 5.0, 28.0)
    busy = planner.plan("anime", 5.0, 28.0, backlog_s={free.accelerator: 3.0})
    assert busy.feasible and busy.accelerator != free.accelerator
    assert busy == planner.plan("anime", 5.0, 28.0, backlog_s={free.accelerator: 3.0})
    expect = _brute_force(planner, "anime", 5.0, 28.0, {free.accelerator: 3.0})
    assert (busy.model, busy.accelerator, busy.steps) == expect[1:]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"latency_slo_s": -1.0}, "latency_slo_s: -1.0"),
        ({"latency_slo_s": float("nan")}, "latency_slo_s: nan"),
        ({"latency_slo_s": float("inf")}, "latency_slo_s: inf"),
        ({"min_clip": 150.0}, "min_clip: 150.0"),
        ({"min_clip": -1}, "min_clip: -1"),
        ({"style": "cubism"}, "style: 'cubism': unknown; served styles: anime, photo, poster"),
        ({"latency_slo_s": 1e308}, "latency_slo_s: 1e\\+308: at most 3600 seconds"),
        ({"prompt_tokens": -5}, "prompt_tokens: -5: must be an integer in 0..77"),
    ],
)
def test_bad_requests_name_the_field(planner, kwargs, needle):
    args = {"style": "photo", "latency_slo_s": 2.0, "min_clip": 20.0} | kwargs
    with pytest.raises(InvalidInputError, match=needle.replace("(", r"\(")):
        planner.plan(args.pop("style"), args.pop("latency_slo_s"), args.pop("min_clip"), **args)


def test_unserved_resolution_and_no_models(planner, latency_model, clip_model):
    with pytest.raises(InvalidInputError, match="served at 512x512"):
        planner.plan("photo", 2.0, 20.0, resolution=(1024, 1024))
    with pytest.raises(InvalidInputError, match="no model registered"):
        Planner([], latency_model, clip_model)


def test_latency_scale_corrects_one_candidate(planner):
    free = planner.plan("anime", 5.0, 28.0)
    key = (f"{free.model}@reference", free.accelerator)
    slow = planner.plan("anime", 5.0, 28.0, latency_scale={key: 2.0})
    if slow.accelerator == free.accelerator and slow.model == free.model:
        assert slow.predicted_latency_s == pytest.approx(2 * free.predicted_latency_s)
    else:  # doubling made another candidate the shortest
        assert slow.predicted_latency_s <= 2 * free.predicted_latency_s
    assert planner.plan("anime", 5.0, 28.0, latency_scale={key: 1.0}) == free
    tight = planner.plan("anime", free.predicted_latency_s * 1.01, 28.0, latency_scale={
        (f"{o.name}@{o.version}", a): 2.0 for o, a in planner.curves("anime", (512, 512)).labels
    })  # fmt: skip
    assert not tight.feasible  # every candidate twice as slow: the SLO no longer fits


def test_batch_occupancy_is_planned_for_and_monotone(latency_model, clip_model):
    """A batch of b such jobs finishes together: its predicted run time rises with b,
    and the planner refuses a batch size it has no curves for."""
    opts = [
        ModelOption(
            "sd-1.5", "reference", ("photo",), 1, 50, R512, 7.5, ("cuda-NVIDIA A100 (DiffServe)",)
        )  # fmt: skip
    ]
    planner = Planner(opts, latency_model, clip_model, batch_sizes=(2, 4))
    assert planner.batch_sizes == (1, 2, 4)
    times = [
        planner.plan("photo", 3600.0, 25.0, batch_size=b).predicted_latency_s for b in (1, 2, 4)
    ]
    assert times[0] < times[1] < times[2], times
    steps = planner.plan("photo", 3600.0, 25.0).steps
    assert planner.plan("photo", 3600.0, 25.0, batch_size=4).steps == steps  # CLIP: per image
    per = planner.per_accelerator("photo", 25.0, batch_size=4)
    assert per["cuda-NVIDIA A100 (DiffServe)"][2] == pytest.approx(times[2])
    with pytest.raises(InvalidInputError, match="batch_size: 3: planned for 1, 2, 4"):
        planner.plan("photo", 10.0, 25.0, batch_size=3)
