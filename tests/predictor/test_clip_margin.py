"""The CLIP a plan promises: the prediction less a margin learned on unseen prompts.

A job's CLIP depends mostly on its prompt; the predictor sees only the token count. The
synthetic world here gives each prompt its own offset around a saturating curve, as the
toy-world models' measured CLIP does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from predictor.features import CLIP_SPEC, FeatureSpec, add_derived_columns
from predictor.planner import ModelOption, Planner
from predictor.training import CLIP_COVERAGE, clip_floors, train

STEPS = (1, 2, 4, 8, 12, 16, 25)
PROMPT_SD, SEED_SD = 4.0, 1.0


def curve(model: str, steps: np.ndarray) -> np.ndarray:
    top = {"m-a": 60.0, "m-b": 45.0}[model]
    return top - 25.0 * np.exp(-(steps - 1) / 3.0)


def frame(prompts: int, rng: np.random.Generator, first: int = 0) -> pd.DataFrame:
    rows = []
    for model in ("m-a", "m-b"):
        for p in range(first, first + prompts):
            offset = rng.normal(0.0, PROMPT_SD)
            for seed in (0, 1):
                for s in STEPS:
                    clip = curve(model, np.array([s]))[0] + offset + rng.normal(0.0, SEED_SD)
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
                            prompt_id=f"p{p}",
                            prompt_tokens=8,
                            seed=seed,
                            clip_score=clip,
                            source="measured",
                        )
                    )
    return add_derived_columns(pd.DataFrame(rows))


@pytest.fixture(scope="module")
def trained():
    return train(frame(16, np.random.default_rng(0)), CLIP_SPEC, {"n_estimators": 150})


def test_margin_is_the_spread_of_unseen_prompts(trained):
    margins = trained.spec.lower_margin
    assert set(margins) == {"m-a@1", "m-b@1"}
    # the 95 % quantile of prompt + seed noise: 1.645 * sqrt(4² + 1²) = 6.8
    for key, m in margins.items():
        assert 4.0 < m < 10.0, (key, m)
    assert "mae_unseen_prompts/m-a_v1" in trained.metrics


def test_promised_clip_holds_for_new_prompts(trained):
    """On prompts never profiled, CLIP reaches prediction - margin about CLIP_COVERAGE of
    the time, and the mean prediction alone only about half the time."""
    new = frame(40, np.random.default_rng(1), first=100)
    pred = trained.predict(new)
    margin = new["model"].map(trained.spec.lower_margin).to_numpy()
    y = new["clip_score"].to_numpy()
    covered = float(np.mean(y >= pred - margin))
    assert covered >= CLIP_COVERAGE - 0.05, covered
    assert float(np.mean(y >= pred)) < 0.7


def test_batch_rows_do_not_narrow_the_margin_of_one_image(trained):
    """A batch row's CLIP is the mean of its images (here: the curve itself, no prompt or
    seed noise left); a job is one image, so batch rows beside the batch-1 ones leave
    the margin about as wide."""
    one = frame(16, np.random.default_rng(0))
    steps = one["steps"].to_numpy(dtype=float)
    mean = np.where(one["model"].str.startswith("m-a"), curve("m-a", steps), curve("m-b", steps))
    batches = [one.assign(batch_size=b, clip_score=mean) for b in (2, 4, 8)]
    both = train(pd.concat([one, *batches], ignore_index=True), CLIP_SPEC, {"n_estimators": 150})
    for key, m in trained.spec.lower_margin.items():
        # pooled with the batch rows the margins were 0.61x and 0.43x these
        assert both.spec.lower_margin[key] >= 0.75 * m, key


def test_no_margin_from_a_single_prompt():
    one = frame(1, np.random.default_rng(2))
    assert train(one, CLIP_SPEC, {"n_estimators": 50}).spec.lower_margin == {}


def test_margins_survive_the_saved_spec(trained):
    again = FeatureSpec.from_json(trained.spec.to_json())
    assert again.lower_margin == trained.spec.lower_margin
    assert again.clip_floor == trained.spec.clip_floor and again.clip_floor


def test_floors_are_the_conformal_order_statistic_of_each_cell():
    """floor(0.05 (n + 1))-th lowest of a cell's n captions (the lowest below 19), from
    rows of one image; none for a model of one prompt."""
    rows = [dict(model="m@1", steps=4, batch_size=1, prompt_id=f"p{i}", clip_score=float(i))
            for i in range(39)]  # fmt: skip
    rows += [dict(model="m@1", steps=8, batch_size=1, prompt_id=f"p{i}", clip_score=10.0 + i)
             for i in range(10)]  # fmt: skip
    rows += [dict(model="m@1", steps=8, batch_size=4, prompt_id="p0", clip_score=0.0)]
    rows += [dict(model="one@1", steps=4, batch_size=1, prompt_id="p0", clip_score=5.0)]
    assert clip_floors(pd.DataFrame(rows)) == {"m@1": {4: 1.0, 8: 10.0}}


def test_a_floor_counts_each_caption_once_by_its_lowest_image():
    """20 captions x 2 seeds; one caption scores 0 on one seed. Counted by image (40, the
    2nd lowest) the floor would be 51, above that caption's 0; counted by caption (20,
    each by its lowest; the lowest of them), it is 0."""
    rows = [dict(model="m@1", steps=4, batch_size=1, prompt_id=f"p{i}", seed=s,
                 clip_score=0.0 if i == 0 else 50.0 + i + s)
            for i in range(20) for s in (0, 1)]  # fmt: skip
    rows[1]["clip_score"] = 60.0  # the zero caption's other seed scores well
    assert clip_floors(pd.DataFrame(rows)) == {"m@1": {4: 0.0}}


def test_no_promise_above_what_images_reach_when_a_share_scores_zero(latency_model):
    """A fifth of m-b's images score 0 whatever the caption (as toy-s's do): the margin
    under the mean does not see that, the floor does, so nothing above 0 is promised on
    m-b, while m-a (no zeros) keeps its promises."""
    df = frame(16, np.random.default_rng(3))
    zero = (df["model"] == "m-b@1") & (df["prompt_id"].str[1:].astype(int) % 5 == 0)
    df.loc[zero, "clip_score"] = 0.0
    trained = train(df, CLIP_SPEC, {"n_estimators": 150})
    spec = trained.spec
    steps = np.array(STEPS)
    assert (spec.floor_at("m-b@1", steps) == 0.0).all()
    assert (spec.floor_at("m-a@1", steps) > 20.0).all()
    np.testing.assert_array_equal(
        spec.floor_at("m-a@1", [3]), min(spec.clip_floor["m-a@1"][2], spec.clip_floor["m-a@1"][4])
    )
    # the planner: nothing above 0 on m-b, and the refusal says why
    acc = "cuda-NVIDIA A100"
    opt = ModelOption("m-b", "1", ("photo",), 1, 25, ((64, 64),), 7.5, (acc,))
    planner = Planner([opt], latency_model, trained)
    assert planner.curves("photo", (64, 64)).clip[0, 0, :].max() <= 0.0
    assert not planner.plan("photo", 3600.0, 5.0).feasible


def test_planner_promises_the_lower_bound(trained, latency_model):
    """The planner's CLIP curve is the prediction less the margin, so a min CLIP between
    the two is planned at more steps (or refused), never at the mean's step count."""
    acc = "cuda-NVIDIA A100"
    opt = ModelOption("m-a", "1", ("photo",), 1, 25, ((64, 64),), 7.5, (acc,))
    planner = Planner([opt], latency_model, trained)
    table = planner.curves("photo", (64, 64))
    grid = planner._curve_frame(opt, acc, (64, 64), np.arange(1, 26))
    mean = trained.predict(grid)
    margin = trained.spec.lower_margin["m-a@1"]
    floor = trained.spec.floor_at("m-a@1", np.arange(1, 26))
    np.testing.assert_allclose(table.clip[0, 0, :], np.minimum(mean - margin, floor), atol=1e-6)
    assert planner.clip_margins == {"m-a@1": margin}
    # a min CLIP the mean reaches at 4 steps is promised only later
    target = float(mean[3])
    plan = planner.plan("photo", 3600.0, target)
    assert not plan.feasible or plan.steps > 4
    if plan.feasible:
        assert plan.predicted_clip >= target
    # above every promise: refused, and the reason says the promise is a bound
    refused = planner.plan("photo", 3600.0, float(mean.max()) - 1.0)
    assert not refused.feasible
    # the reason names what bounds the best promise: the margin, or the cell's floor
    at = int(np.argmax(table.clip[0, 0, :]))
    if floor[at] < mean[at] - margin:
        assert (
            "promised: the CLIP every image of 95 % of its profiled captions there reached"
            in refused.reason
        )
    else:
        assert "promised for 95 % of prompts: mean less" in refused.reason
