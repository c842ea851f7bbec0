"""The prompt-aware CLIP predictor and the promise it lets the planner make.

A synthetic world where each prompt's CLIP offset is mostly a function of its features
(two embedding directions and its object count) plus a little that no feature explains,
and each image adds seed noise: a prompt-blind predictor must promise far below the
mean, a prompt-aware one close to the prompt's own curve, and both promises must hold."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest

from predictor.features import CLIP_SPEC, PROMPT_CLIP_SPEC, add_derived_columns
from predictor.planner import TOKEN_BUCKETS, ModelOption, Planner, numeric_frame
from predictor.prompt_features import PC_COLUMNS, PROMPT_COMPONENTS, PromptFeatures
from predictor.training import train
from sdaas.errors import InvalidInputError

STEPS = (1, 2, 4, 8, 16)
ACC = "cuda-NVIDIA A100"
EXPLAINED_SD, UNEXPLAINED_SD, SEED_SD = 12.0, 2.0, 2.0


def curve(model: str, steps: np.ndarray) -> np.ndarray:
    top = {"m-a": 60.0, "m-b": 48.0}[model]
    return top - 25.0 * np.exp(-(np.asarray(steps, dtype=float) - 1) / 2.0)


def prompt_world(n: int, rng: np.random.Generator, first: int = 0) -> list[dict]:
    """Per prompt: its features and its true offset."""
    out = []
    for p in range(first, first + n):
        pcs = rng.normal(0.0, 1.0, PROMPT_COMPONENTS)
        objects = int(rng.integers(1, 4))
        effect = EXPLAINED_SD * (0.6 * pcs[0] - 0.5 * pcs[1] + 0.4 * (objects - 2))
        feats = PromptFeatures(int(rng.integers(5, 10)), objects, tuple(pcs))
        out.append(dict(id=f"p{p}", features=feats, offset=effect + rng.normal(0, UNEXPLAINED_SD)))
    return out


def frame(prompts: list[dict], rng: np.random.Generator, seeds=(0, 1)) -> pd.DataFrame:
    rows = []
    for model in ("m-a", "m-b"):
        for p in prompts:
            for seed in seeds:
                for s in STEPS:
                    clip = curve(model, s) + p["offset"] + rng.normal(0.0, SEED_SD)
                    rows.append(
                        dict(
                            model=model,
                            model_version="1",
                            accelerator="cpu-x",
                            steps=s,
                            height=64,
                            width=64,
                            batch_size=1,
                            guidance_scale=7.5,
                            prompt_id=p["id"],
                            seed=seed,
                            clip_score=clip,
                            source="measured",
                            **p["features"].columns(),
                        )
                    )
    df = add_derived_columns(pd.DataFrame(rows))
    df["prompt_tokens"] = df["prompt_tokens"].astype(int)
    return df


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    seen, unseen = prompt_world(60, rng), prompt_world(40, rng, first=1000)
    train_df = frame(seen, rng)
    params = {"n_estimators": 200, "n_jobs": 1}  # small fits: one thread is faster
    return dict(
        seen=seen,
        unseen=unseen,
        test=frame(unseen, rng, seeds=(7,)),
        aware=train(train_df, PROMPT_CLIP_SPEC, params),
        blind=train(train_df, CLIP_SPEC, params),
    )


def test_prompt_features_cut_the_error_on_unseen_prompts(world):
    test = world["test"]
    y = test["clip_score"].to_numpy()
    aware = np.abs(world["aware"].predict(test) - y).mean()
    blind = np.abs(world["blind"].predict(test) - y).mean()
    assert aware < 0.6 * blind, (aware, blind)
    # the held-out-prompt MAE the training logs says the same
    unseen = "mae_unseen_prompts/m-a_v1"
    assert world["aware"].metrics[unseen] < 0.6 * world["blind"].metrics[unseen]


def test_the_bound_covers_unseen_prompts(world):
    """prediction - margin (conformal, prompt-grouped CV) holds for ~95 % of images of
    prompts never trained on, and is far tighter than the prompt-blind margin."""
    test = world["test"]
    y = test["clip_score"].to_numpy()
    for name in ("aware", "blind"):
        t = world[name]
        bound = t.predict(test) - test["model"].map(t.spec.lower_margin).to_numpy()
        assert np.mean(y >= bound) >= 0.90, name
    # per step count too, with the step margins a prompt-aware plan promises by
    t = world["aware"]
    for (key, st), rows in test.groupby(["model", "steps"]):
        bound = t.predict(rows) - t.spec.margin_at(key, np.array([st]))[0]
        assert np.mean(rows["clip_score"].to_numpy() >= bound) >= 0.85, (key, st)
    aware, blind = world["aware"].spec.lower_margin, world["blind"].spec.lower_margin
    assert set(aware) == {"m-a@1", "m-b@1"}
    for key in aware:
        assert aware[key] < 0.5 * blind[key], (key, aware, blind)


def _planner(world, latency_model, with_prompt: bool, featurizer=None):
    opts = [
        ModelOption("m-a", "1", ("photo",), 1, 16, ((64, 64),), 7.5, (ACC,)),
        ModelOption("m-b", "1", ("photo",), 1, 16, ((64, 64),), 7.5, (ACC,)),
    ]
    return Planner(
        opts,
        latency_model,
        world["blind"],
        prompt_clip=world["aware"] if with_prompt else None,
        featurizer=featurizer,
    )


@pytest.fixture(scope="module")
def planners(world, latency_model):
    return _planner(world, latency_model, False), _planner(world, latency_model, True)


def test_without_features_plans_are_unchanged(planners):
    blind, both = planners
    rng = np.random.default_rng(3)
    for _ in range(200):
        slo, mc = float(rng.uniform(0.5, 60)), float(rng.uniform(0, 90))
        assert both.plan("photo", slo, mc) == blind.plan("photo", slo, mc)
        assert both.per_accelerator("photo", mc) == blind.per_accelerator("photo", mc)
    # a planner without a prompt-aware predictor ignores features: still prompt-blind
    f = PromptFeatures(7, 2, (0.0,) * PROMPT_COMPONENTS)
    assert blind.plan("photo", 60.0, 30.0, prompt_features=f) == blind.plan("photo", 60.0, 30.0)


def test_prompt_curves_are_the_bound_of_this_prompt(world, planners):
    """At a profiled step count: this prompt's prediction less that step's margin; in
    between, the promise of the profiled step count below (nothing is promised where
    nothing was measured)."""
    _, planner = planners
    aware = world["aware"]
    f = world["unseen"][0]["features"]
    curves = planner.prompt_curves("photo", (64, 64), f)
    t = planner.curves("photo", (64, 64))
    at = np.array([1, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 16])  # steps 1..16
    for row, (o, acc) in enumerate(t.labels):
        grid = planner._curve_frame(o, acc, (64, 64), at)
        for col, v in f.columns().items():
            grid[col] = v
        want = aware.predict(grid) - aware.spec.margin_at(f"{o.name}@1", at)
        np.testing.assert_allclose(curves[row, :16], want, atol=1e-6)
        assert np.all(np.diff(aware.predict(grid)) >= -1e-9)  # the mean: monotone in steps
    # so a prompt-aware plan lands on a profiled step count, promising its bound there
    rng = np.random.default_rng(11)
    for p in world["unseen"][:10]:
        for mc in rng.uniform(0.0, 60.0, 5):
            plan = planner.plan("photo", 3600.0, float(mc), prompt_features=p["features"])
            if plan.feasible:
                assert plan.steps in STEPS, plan
                assert plan.predicted_clip >= mc
    # the numpy matrix the planner feeds LightGBM is the DataFrame's, in codes
    grid = planner._curve_frame(t.labels[1][0], ACC, (64, 64), np.arange(1, 4))
    x = numeric_frame(aware.spec, grid)
    np.testing.assert_allclose(aware.model.booster_.predict(x), aware.predict(grid), atol=1e-9)


def test_easy_prompts_get_plans_hard_ones_are_refused(world, planners):
    """A prompt that draws well is promised more than any prompt-blind plan, one that
    draws badly less; a min CLIP between them is planned for the first only, and each
    plan's promise is that prompt's own bound."""
    blind, planner = planners
    feats = [p["features"] for p in world["unseen"]]
    offsets = np.array([p["offset"] for p in world["unseen"]])
    easy, hard = feats[int(np.argmax(offsets))], feats[int(np.argmin(offsets))]
    best_blind = float(np.max(blind.curves("photo", (64, 64)).clip))
    best_easy = float(np.max(planner.prompt_curves("photo", (64, 64), easy)))
    best_hard = float(np.max(planner.prompt_curves("photo", (64, 64), hard)))
    assert best_easy > best_blind + 5.0 and best_easy > best_hard + 10.0
    target = (best_easy + max(best_blind, best_hard)) / 2
    assert not blind.plan("photo", 3600.0, target).feasible
    plan = planner.plan("photo", 3600.0, target, prompt_features=easy)
    assert plan.feasible and plan.predicted_clip >= target
    refused = planner.plan("photo", 3600.0, target, prompt_features=hard)
    assert not refused.feasible
    assert "this prompt's predicted mean less" in refused.reason
    # the margin it quotes is the one of the step count its best promise stands at
    steps, model, margin = re.search(
        r"at (\d+) steps on (\S+) .* less ([\d.]+)\)", refused.reason
    ).groups()
    want = world["aware"].spec.margin_at(f"{model}@1", np.array([int(steps)]))[0]
    assert float(margin) == pytest.approx(want, abs=0.05)
    # per accelerator, the same choice
    per = planner.per_accelerator("photo", target, prompt_features=easy)
    assert per[ACC][1] == plan.steps


def test_features_on_another_basis_are_refused(planners):
    _, planner = planners
    f = PromptFeatures(7, 2, (0.0,) * PROMPT_COMPONENTS, basis="not-this-one")
    planner.prompt_basis_id = "the-trained-one"
    try:
        with pytest.raises(InvalidInputError, match="basis"):
            planner.plan("photo", 10.0, 30.0, prompt_features=f)
    finally:
        planner.prompt_basis_id = ""


def test_a_prompt_is_featurized_once_per_plan(world, latency_model):
    seen = []
    f = world["unseen"][3]["features"]

    class Fake:
        def one(self, prompt):
            seen.append(prompt)
            return f

    planner = _planner(world, latency_model, True, featurizer=Fake())
    assert planner.plan("photo", 60.0, 40.0, prompt="p") == planner.plan(
        "photo", 60.0, 40.0, prompt_features=f
    )
    assert seen == ["p"]


def test_prompt_aware_plans_stay_fast(world, planners):
    """Every request a new prompt (no cache hits): well under a millisecond or two."""
    _, planner = planners
    rng = np.random.default_rng(5)
    feats = [PromptFeatures(7, 2, tuple(rng.normal(size=PROMPT_COMPONENTS))) for _ in range(300)]
    times = []
    for f in feats:
        t = time.perf_counter()
        planner.plan("photo", 5.0, 40.0, prompt_features=f)
        times.append(time.perf_counter() - t)
    assert np.median(times) < 0.005, np.median(times)


def test_step_margins_bracket_and_survive_the_saved_spec(world):
    from predictor.features import FeatureSpec

    spec = world["aware"].spec
    assert set(spec.step_margin["m-a@1"]) == set(STEPS)
    again = FeatureSpec.from_json(spec.to_json())
    assert again.step_margin == spec.step_margin
    m = spec.with_margins({"k": 9.0}, {"k": {2: 5.0, 8: 7.0, 16: 1.0}})
    np.testing.assert_allclose(
        m.margin_at("k", np.array([1, 2, 3, 8, 12, 16, 40])), [5, 5, 7, 7, 7, 1, 1]
    )
    assert m.margin_at("other", np.array([3])).tolist() == [0.0]
    assert spec.with_margins({"k": 9.0}).margin_at("k", np.array([3])).tolist() == [9.0]


def test_pc_columns_missing_means_blind_rows_still_predict(world):
    """Reference-style rows with no prompt columns still go through the aware spec."""
    test = world["test"].drop(columns=list(PC_COLUMNS) + ["prompt_objects"]).head(5)
    assert np.isfinite(world["aware"].predict(test)).all()


def test_planned_margin_covers_the_jobs_a_plan_would_promise():
    """Half the rows predict so low their bound is below 0 (nothing is ever promised on
    them), and there the predictor is never wrong; on the other half it is often
    optimistic. The plain quantile covers 95 % of all rows but far fewer of the ones a
    plan promises on; the planned margin covers 95 % of those, weighted as planned."""
    from predictor.training import CLIP_COVERAGE, planned_margin

    rng = np.random.default_rng(0)
    n = 2000
    low = np.arange(n) < n // 2
    pred = np.where(low, 5.0, 60.0)
    resid = np.where(low, rng.normal(-10.0, 1.0, n), rng.normal(0.0, 10.0, n))
    plain = float(np.quantile(resid, CLIP_COVERAGE))
    m = planned_margin(resid, pred)
    assert m > plain + 3.0
    y = pred - resid
    promised = pred - m > 0
    assert np.mean(y[promised] >= (pred - m)[promised]) >= CLIP_COVERAGE - 0.01
    assert np.mean(y[~low] >= pred[~low] - plain) < 0.92  # the plain one falls short there


def test_cross_fit_holds_out_the_caption_and_a_shared_seed():
    """No row is predicted by a fit that saw its caption, nor, where the sweep ran every
    caption at the same seeds, its seed; every row is predicted exactly once."""
    from predictor.training import cross_fit_folds

    prompts = np.repeat([f"p{i}" for i in range(10)], 4)
    shared = np.tile([0, 1, 0, 1], 10)
    folds = cross_fit_folds(prompts, shared, folds=5)
    assert len(folds) == 10  # 5 caption folds x 2 seed groups
    times = np.zeros(len(prompts), dtype=int)
    for fit, held in folds:
        times += held
        assert not set(prompts[fit]) & set(prompts[held])
        assert not set(shared[fit]) & set(shared[held])
        assert fit.sum() > 0
    assert np.all(times == 1)
    # a seed of its own per caption: caption folds only, every other row fitted on
    own = np.arange(len(prompts))
    folds = cross_fit_folds(prompts, own, folds=5)
    assert len(folds) == 5
    for fit, held in folds:
        assert not set(prompts[fit]) & set(prompts[held])
        assert np.all(fit == ~held)


def test_replay_plans_by_the_planning_rule():
    """One caption, a fast and a slow model at two step counts: each min CLIP lands on
    the fastest (model, fewest steps) whose bound reaches it, and is met or not by that
    job's measured CLIP."""
    from predictor.training import PlanReplay

    replay = PlanReplay(
        pred=np.array([[[30.0, 50.0], [60.0, 70.0]]]),
        clip=np.array([[[25.0, 55.0], [65.0, 60.0]]]),
        latency=np.array([[1.0, 2.0], [3.0, 4.0]]),
        caption=np.array(["p0"]),
        models=["fast", "slow"],
        steps=[1, 2],
    )
    # 20: fast@1 promises 30, gets 25 (missed); 40: fast@2 (2 s) beats slow@1 (3 s),
    # promises 50, gets 55; 55: slow@1, 60 <= 65; 65: slow@2, 70 > 60 (missed); 80: none
    cov, refused = replay.coverage(np.zeros((2, 2)), np.array([20.0, 40.0, 55.0, 65.0, 80.0]))
    assert (cov, refused) == pytest.approx((0.5, 0.2))
    # a margin of 10 on every promise: all four planned jobs meet theirs
    cov, refused = replay.coverage(np.full((2, 2), 10.0), np.array([10.0, 30.0, 45.0, 55.0]))
    assert (cov, refused) == pytest.approx((1.0, 0.0))


def test_prompt_aware_plans_keep_their_promise_on_unseen_prompts(world, planners):
    """Requests for prompts never trained on, each job's CLIP drawn fresh: at least
    CLIP_COVERAGE of the planned jobs reach what their plan promised (a few points of
    sampling slack), and fewer requests are refused than prompt-blind."""
    from predictor.training import CLIP_COVERAGE

    blind, planner = planners
    rng = np.random.default_rng(21)
    met = planned = refused_aware = refused_blind = 0
    for _ in range(1500):
        p = world["unseen"][int(rng.integers(len(world["unseen"])))]
        mc = float(rng.uniform(0.0, 70.0))
        plan = planner.plan("photo", 3600.0, mc, prompt_features=p["features"])
        refused_blind += not blind.plan("photo", 3600.0, mc).feasible
        if not plan.feasible:
            refused_aware += 1
            continue
        clip = curve(plan.model, plan.steps) + p["offset"] + rng.normal(0.0, SEED_SD)
        met += clip >= plan.predicted_clip
        planned += 1
    assert planned > 300
    assert met / planned >= CLIP_COVERAGE - 0.03, met / planned
    assert refused_aware < 0.8 * refused_blind, (refused_aware, refused_blind)


def test_a_seed_shared_by_captions_widens_the_margins():
    """Each seed moves every caption's CLIP alike (the same initial noise): held out by
    seed, the cross-fit sees that luck and the margins grow; with the same rows given
    seeds of their own it cannot (nothing to hold out), so they are narrower."""
    from predictor.training import prompt_clip_margins

    rng = np.random.default_rng(4)
    prompts = prompt_world(40, rng)
    df = frame(prompts, rng, seeds=(0, 1))
    luck = np.where(df["seed"] == 0, 8.0, -8.0)
    df["clip_score"] = df["clip_score"] + luck
    params = {"n_estimators": 100, "verbose": -1, "n_jobs": 1}
    _, _, shared = prompt_clip_margins(df, PROMPT_CLIP_SPEC, params)
    own = df.assign(seed=df["prompt_id"].str[1:].astype(int) * 2 + df["seed"])
    _, _, separate = prompt_clip_margins(own, PROMPT_CLIP_SPEC, params)
    for key in shared:
        for st in STEPS:
            assert shared[key][st] > separate[key][st] + 3.0, (key, st, shared, separate)


def test_a_model_without_prompt_margins_keeps_its_blind_curve(world, latency_model):
    """The prompt-aware predictor promises nothing it has not calibrated: a model it has
    no margins for is planned on its prompt-blind curve, even with prompt features."""
    from dataclasses import replace

    aware = world["aware"]
    spec = aware.spec
    only_a = spec.with_margins(
        {"m-a@1": spec.lower_margin["m-a@1"]}, {"m-a@1": spec.step_margin["m-a@1"]}
    )
    opts = [
        ModelOption("m-a", "1", ("photo",), 1, 16, ((64, 64),), 7.5, (ACC,)),
        ModelOption("m-b", "1", ("photo",), 1, 16, ((64, 64),), 7.5, (ACC,)),
    ]
    planner = Planner(opts, latency_model, world["blind"], prompt_clip=replace(aware, spec=only_a))
    f = world["unseen"][2]["features"]
    curves = planner.prompt_curves("photo", (64, 64), f)
    t = planner.curves("photo", (64, 64))
    bucket = int(np.abs(np.array(TOKEN_BUCKETS) - f.tokens).argmin())
    for row, (o, _) in enumerate(t.labels):
        if o.name == "m-b":
            np.testing.assert_array_equal(curves[row], t.clip[bucket][row])
        else:
            assert not np.array_equal(curves[row], t.clip[bucket][row])
