"""LightGBM training for the latency and CLIP predictors.

Monotone in steps via `monotone_constraints`, with the constraint vector validated first,
and the latency target reshaped so plain trees interpolate between profiled step counts
(see features.py). Measured alternatives, held-out latency MAPE on the quick tiny-model
sweep: latency itself with linear trees 49 %; log(latency / (steps + k_g)) with linear
trees 29 %, with plain trees 13 % (cell medians 12 %).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import lightgbm as lgb
import numpy as np
import pandas as pd

from predictor.dataset import holdout_mask
from predictor.features import FeatureSpec, mae, mape
from predictor.prompt_features import PromptBasis

DEFAULT_PARAMS: dict = {
    "n_estimators": 400,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 3,
    "subsample": 1.0,
    # Profiles have few rows per model/accelerator: LightGBM's defaults (100 rows per
    # category group) would forbid splitting on them at all.
    "min_data_per_group": 1,
    "cat_smooth": 1.0,
    "max_cat_to_onehot": 64,
    "verbose": -1,
    "n_jobs": 2,
}


@dataclass
class TrainedModel:
    spec: FeatureSpec
    model: lgb.LGBMRegressor
    params: dict
    metrics: dict[str, float]
    train_rows: int
    test_rows: int
    train_s: float
    test: pd.DataFrame = field(repr=False)  # held-out rows with a `pred` column
    # the prompt-aware CLIP predictor: the basis its prompt features are on
    prompt_basis: PromptBasis | None = None

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return self.spec.decode_target(self.model.predict(self.spec.frame(df)), df)


def usable_rows(df: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Rows with a finite target (profiles carry NaN where a quantity was not measured)."""
    y = df[spec.target].astype(float)
    ok = np.isfinite(y)
    if spec.target == "latency_s":
        ok &= y > 0
    return df[ok].reset_index(drop=True)


def evaluate(spec: FeatureSpec, y: np.ndarray, pred: np.ndarray, test: pd.DataFrame) -> dict:
    if spec.target == "latency_s":
        cells = (
            test.assign(pred=pred)
            .groupby(["model", "accelerator", "steps", "batch_size", "pixels"])
            .agg(y=(spec.target, "median"), p=("pred", "median"))
        )
        out = {
            "mape_pct": mape(y, pred),
            "cell_median_mape_pct": mape(cells["y"].to_numpy(), cells["p"].to_numpy()),
            "mae_s": mae(y, pred),
        }
        published = (test["source"] == "published").to_numpy()
        if published.any():  # reference data: the rows that are not derived by a rule
            out["published_mape_pct"] = mape(y[published], pred[published])
        return out
    out = {"mae": mae(y, pred), "rmse": float(np.sqrt(np.mean((pred - y) ** 2)))}
    err = pd.Series(np.abs(pred - y), index=test.index)
    for model, e in err.groupby(test["model"]):  # MLflow keys may not hold '@'
        out[f"mae/{str(model).replace('@', '_v')}"] = float(e.mean())
    return out


# The prompt-aware CLIP predictor learns from a few dozen captions: small trees with many
# rows per leaf and a feature subsample, or it memorises the captions (measured on 32
# toy-world captions, prompt-grouped CV MAE: default params 17.2, these 16.6; blind 17.3).
PROMPT_CLIP_PARAMS: dict = {
    "num_leaves": 7,
    "min_child_samples": 20,
    "n_estimators": 200,
    "colsample_bytree": 0.7,
    # a few hundred rows: one thread is as fast, and 4-5x faster on a busy host, where
    # OpenMP threads wait for a core another process holds (the calibration fits 16x)
    "n_jobs": 1,
}

CLIP_COVERAGE = 0.95  # the share of unseen prompts whose CLIP reaches what a plan promises


def one_image(data: pd.DataFrame) -> np.ndarray:
    """The rows a promise is learnt from: a promise is per image, and a batch row's CLIP
    is the mean of its images, whose spread is narrower (toy-m at 25 steps: errors of sd
    27 at batch 1, 5 at batch 4). Batch-1 rows where there are any, else every row."""
    if "batch_size" in data.columns and (data["batch_size"] == 1).any():
        return (data["batch_size"] == 1).to_numpy()
    return np.ones(len(data), dtype=bool)


MARGIN_FOLDS = 5


def clip_margins(
    data: pd.DataFrame, spec: FeatureSpec, params: dict
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[int, float]]]:
    """Per model key, the CLIP_COVERAGE quantile of (prediction - measured CLIP) over
    prompts the predictor did not see (folds grouped by prompt id), on rows of one image
    (`one_image`): a job's CLIP depends mostly on its prompt, which the predictor sees
    only as a token count, so a plan on the mean curve meets a per-image minimum about
    half the time. Returns the
    margins and, per model, the MAE on unseen prompts (logged with the metrics). No
    margin (0) for a model whose rows span fewer than 2 prompts (published curves).
    Third, per model and profiled step count, the margin of a promise at that step
    count (`FeatureSpec.step_margin`, what `blind_step_margins` plans promise by): the
    step's own lower tail scaled by one per-model factor calibrated on the jobs plans
    would promise on (`planned_margin`); NO_PROMISE where no margin holds for
    CLIP_COVERAGE of them."""
    prompts = data["prompt_id"].astype(str)
    unique = sorted(prompts.unique())
    if len(unique) < 2:
        return {}, {}, {}
    folds = min(MARGIN_FOLDS, len(unique))
    fold_of = {p: i % folds for i, p in enumerate(unique)}
    fold = prompts.map(fold_of).to_numpy()
    resid = np.full(len(data), np.nan)
    for k in range(folds):
        held = fold == k
        fit_spec = spec.with_categories(data[~held])
        model = lgb.LGBMRegressor(monotone_constraints=list(fit_spec.monotone), **params)
        model.fit(
            fit_spec.frame(data[~held]),
            data.loc[~held, spec.target].to_numpy(dtype=float),
            categorical_feature=list(fit_spec.categorical),
        )
        resid[held] = model.predict(fit_spec.frame(data[held])) - data.loc[
            held, spec.target
        ].to_numpy(dtype=float)
    margins, mae_unseen, step_margins = {}, {}, {}
    per_image = one_image(data)
    resid = pd.Series(resid, index=data.index)[per_image]
    for key, r in resid.groupby(data["model"].astype(str)[per_image]):
        if data.loc[r.index, "prompt_id"].nunique() < 2:
            continue
        # "higher": the conformal (finite-sample) side of the quantile
        margins[key] = max(0.0, float(np.quantile(r, CLIP_COVERAGE, method="higher")))
        mae_unseen[f"mae_unseen_prompts/{key.replace('@', '_v')}"] = float(np.abs(r).mean())
        y = data.loc[r.index, spec.target].to_numpy(dtype=float)
        steps = data.loc[r.index, "steps"].to_numpy()
        # each step count's own lower tail (mean less its 5 % quantile) shapes the margin;
        # one factor per model, calibrated on all its rows, sizes it (normalised
        # conformal: per-step shape, per-model calibration; a cell of one step count is
        # too few rows to calibrate alone)
        tail = {
            int(st): max(1.0, float(np.mean(y[steps == st]) - np.quantile(y[steps == st], 0.05)))
            for st in np.unique(steps)
        }
        scale = np.array([tail[int(st)] for st in steps])
        group = (
            data.loc[r.index, "prompt_id"].astype(str) + "|" + data.loc[r.index, "seed"].astype(str)
        ).to_numpy()
        factor = planned_margin(r.to_numpy(), r.to_numpy() + y, scale, group, steps)
        step_margins[key] = {
            st: min(NO_PROMISE, factor * t) if factor < NO_PROMISE else NO_PROMISE
            for st, t in tail.items()
        }
    return margins, mae_unseen, step_margins


NO_PROMISE = 100.0  # a margin no CLIP prediction clears: nothing is promised there


def clip_floors(data: pd.DataFrame) -> dict[str, dict[int, float]]:
    """Per model key and profiled step count, the CLIP that a new caption's image reaches
    with probability >= CLIP_COVERAGE (rows of one image): split conformal over captions,
    the exchangeable unit (images of one caption move together: on toy-l a few captions
    score 0 on most seeds), so each caption counts once, by its lowest image, and the
    floor is the floor(0.05 (n + 1))-th lowest of the n captions' lowest; below 19
    captions, the lowest seen (probability n / (n + 1) only: a sweep of 8 captions vouches
    for 89 %). A promise under the mean by a margin misses every image that scores 0
    (toy-s: 16-28 % of them at every step count); this caps it. None for a model whose
    rows span fewer than 2 prompts (published curves)."""
    rows = data[data["clip_score"].notna()]
    rows = rows[one_image(rows)]
    out: dict[str, dict[int, float]] = {}
    for key, g in rows.groupby(rows["model"].astype(str)):
        if g["prompt_id"].nunique() < 2:
            continue
        out[key] = {}
        for st, cell in g.groupby("steps"):
            y = np.sort(cell.groupby("prompt_id")["clip_score"].min().to_numpy(dtype=float))
            k = max(1, math.floor((1.0 - CLIP_COVERAGE) * (len(y) + 1)))
            out[key][int(st)] = float(y[k - 1])
    return out


def weighted_quantile(x: np.ndarray, w: np.ndarray, q: float, w_next: float = 0.0) -> float:
    """The q-quantile of x weighted by w, with weight `w_next` more at +inf: weighted
    split conformal (Tibshirani et al. 2019), the next job being that +inf. Infinite when
    the rows are too few (or too light) to vouch for q."""
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    total = cum[-1] + w_next
    i = int(np.searchsorted(cum, q * total - 1e-12))
    return float(x[order][i]) if i < len(x) else math.inf


def first_step_share(bound: np.ndarray, group: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Per row, how many min CLIPs a plan sends to it: the planning rule takes the fewest
    steps reaching min CLIP, so a row (one prompt, seed and model at one step count) gets
    the min CLIPs its bound reaches and no fewer step count of its group did."""
    df = pd.DataFrame({"b": np.maximum(bound, 0.0), "g": group, "s": steps})
    df = df.sort_values(["g", "s"])
    before = df.groupby("g")["b"].transform(lambda b: b.cummax().shift(fill_value=0.0))
    return np.maximum(df["b"] - before, 0.0).reindex(range(len(bound))).to_numpy()


def planned_margin(
    resid: np.ndarray,
    pred: np.ndarray,
    scale: np.ndarray | None = None,
    group: np.ndarray | None = None,
    steps: np.ndarray | None = None,
    rounds: int = 8,
) -> float:
    """The margin m (in units of `scale`, per row; 1 without) such that CLIP_COVERAGE of
    the jobs a plan would promise `pred - m * scale` reach it. A promise is only tested
    on the jobs it is planned for, so a row weighs by how many min CLIPs (spread evenly
    over 0..100) would be planned on it (`first_step_share` with `group` and `steps`;
    else its bound): a row whose bound is below 0 promises nothing and would cover
    trivially. The next job weighs as an average promised row (weighted split
    conformal). Fixed point from the unweighted quantile; NO_PROMISE where no margin
    makes the promised rows reach CLIP_COVERAGE; without a positive bound, unweighted."""
    scale = np.ones(len(resid)) if scale is None else np.asarray(scale, dtype=float)
    score = resid / scale
    m = float(np.quantile(score, CLIP_COVERAGE, method="higher"))
    for _ in range(rounds):
        bound = pred - m * scale
        if group is not None and steps is not None:
            w = first_step_share(bound, group, steps)
        else:
            w = np.maximum(bound, 0.0)
        if w.sum() <= 0:
            break
        new = weighted_quantile(score, w, CLIP_COVERAGE, float(w[w > 0].mean()))
        if new * scale.min() >= NO_PROMISE:
            return NO_PROMISE
        if abs(new - m) < 1e-9:
            break
        m = max(m, new)
    return max(0.0, m)


# The prompt-aware predictor's promise (`prompt_clip_margins`): what a plan promises is
# the prediction at a profiled step count less lambda times that (model, step count)'s
# spread of errors on captions (and seeds) the predictor never saw; one lambda, the
# smallest for which the planning rule, replayed on those errors, keeps CLIP_COVERAGE of
# the jobs it plans, with the finite-sample correction of `promise_level` (a job lands
# where its bound first reaches min CLIP, on the fastest model: the selection a per-row
# quantile ignores, and which the old per-row margins missed).
# caption folds of the cross-fit: leave one caption out up to this many captions (no
# luck of a fold draw: the salted prompt ids would draw other folds in every home)
PROMPT_CLIP_FOLDS = 32
SEED_FOLDS = 2  # seed folds, where the sweep gave several captions the same seeds
PLANNED_MIN_CLIPS = 64  # min CLIPs, evenly over the measured range, the replay plans
LAMBDA_GRID = np.round(np.arange(0.0, 8.0001, 0.025), 3)


def is_prompt_aware(spec: FeatureSpec) -> bool:
    return spec.target == "clip_score" and "prompt_pc0" in spec.features


def cross_fit_folds(prompts: np.ndarray, seeds: np.ndarray, folds: int = PROMPT_CLIP_FOLDS):
    """(fit rows, predicted rows) masks of a cross-fit in which no row is predicted by a
    model that saw its caption, nor its seed where seeds are shared by captions.

    A new job is a new caption and, in serving, a new seed. Profiles from before
    `pipelines.profile_grid.noise_seed` ran every caption at the same few seeds (the same
    initial noise), which moves every caption's CLIP alike: a fold that kept the held-out
    seed would learn that seed's luck. So with shared seeds the folds are captions x seed
    groups (the fits then see a fraction of
    the seeds: their errors are, if anything, larger than the final model's)."""
    prompts = np.asarray(prompts).astype(str)
    seeds = np.asarray(seeds)
    uniq = np.array(sorted(set(prompts)))
    k = min(folds, len(uniq))
    fold = pd.Series(np.arange(len(uniq)) % k, index=uniq).loc[prompts].to_numpy()
    useed = np.unique(seeds)
    shared = len(useed) > 1 and pd.Series(prompts).groupby(seeds).nunique().max() > 1
    groups = min(SEED_FOLDS, len(useed)) if shared else 1
    seed_fold = pd.Series(np.arange(len(useed)) % groups, index=useed).loc[seeds].to_numpy()
    out = []
    for f in range(k):
        for g in range(groups):
            held = (fold == f) & (seed_fold == g)
            fit = (fold != f) & ((seed_fold != g) if groups > 1 else True)
            if held.any() and fit.any():
                out.append((fit, held))
    return out


def _cross_fit(data: pd.DataFrame, spec: FeatureSpec, params: dict) -> np.ndarray:
    """Every row's CLIP predicted by a model that never saw its caption (nor its seed)."""
    pred = np.full(len(data), np.nan)
    y = data[spec.target].to_numpy(dtype=float)
    params = {**params, "n_jobs": 1}  # many small fits: see PROMPT_CLIP_PARAMS
    for fit, held in cross_fit_folds(data["prompt_id"].to_numpy(), data["seed"].to_numpy()):
        fit_spec = spec.with_categories(data[fit])
        model = lgb.LGBMRegressor(monotone_constraints=list(fit_spec.monotone), **params)
        model.fit(fit_spec.frame(data[fit]), y[fit], categorical_feature=list(fit_spec.categorical))
        pred[held] = model.predict(fit_spec.frame(data[held]))
    return pred


@dataclass
class PlanReplay:
    """Cross-fitted predictions and measured CLIP as (unit, model, step) cubes, a unit
    being one caption at one seed (NaN where not measured), and each (model, step)'s
    latency: what `coverage` replays the planning rule on."""

    pred: np.ndarray
    clip: np.ndarray
    latency: np.ndarray  # (models, steps)
    caption: np.ndarray  # (units,) caption of each unit
    models: list[str]
    steps: list[int]

    @classmethod
    def build(cls, data: pd.DataFrame, pred: np.ndarray) -> PlanReplay:
        unit = data["prompt_id"].astype(str) + "|" + data["seed"].astype(str)
        units, ui = np.unique(unit.to_numpy(), return_inverse=True)
        models, mi = np.unique(data["model"].astype(str).to_numpy(), return_inverse=True)
        steps, si = np.unique(data["steps"].to_numpy(dtype=int), return_inverse=True)
        shape = (len(units), len(models), len(steps))
        p, y = np.full(shape, np.nan), np.full(shape, np.nan)
        p[ui, mi, si] = pred
        y[ui, mi, si] = data["clip_score"].to_numpy(dtype=float)
        lat = np.tile(steps.astype(float), (len(models), 1))  # no latencies: steps rank
        if "latency_s" in data.columns:
            cell = pd.DataFrame({"m": mi, "s": si, "l": data["latency_s"].astype(float)})
            med = cell.groupby(["m", "s"])["l"].median()
            med = med[np.isfinite(med)]
            if len(med) == len(cell.groupby(["m", "s"])):
                lat[med.index.get_level_values(0), med.index.get_level_values(1)] = med
        caption = np.array([u.split("|", 1)[0] for u in units])
        return cls(p, y, lat, caption, list(models), [int(s) for s in steps])

    def coverage(self, margins: np.ndarray, min_clips: np.ndarray) -> tuple[float, float]:
        """(share of planned jobs whose CLIP reaches the promise, share of requests
        refused) when every unit is planned at every min CLIP of `min_clips`: per model
        the fewest steps whose bound (prediction - margin) reaches min CLIP, the fastest
        such model, its bound the promise (as `Planner.plan` with prompt features)."""
        bound = np.where(np.isnan(self.pred), -np.inf, self.pred - margins[None])
        n, nm, _ = bound.shape
        rows, cols = np.arange(n), np.arange(nm)[None]
        met = planned = 0
        for u in min_clips:
            ok = bound >= u
            has, first = ok.any(axis=2), ok.argmax(axis=2)
            lat = np.where(has, self.latency[cols, first], np.inf)
            best = lat.argmin(axis=1)
            feasible = has.any(axis=1)
            st = first[rows, best]
            met += np.sum(feasible & (self.clip[rows, best, st] >= bound[rows, best, st]))
            planned += feasible.sum()
        total = n * len(min_clips)
        return (met / planned if planned else 1.0), 1.0 - planned / total


def promise_level(captions: int) -> float:
    """The coverage the replay must show for CLIP_COVERAGE on new captions: the split
    conformal level (1 + 1/n) * CLIP_COVERAGE, captions being the exchangeable units."""
    return min(1.0, CLIP_COVERAGE * (1.0 + 1.0 / max(captions, 1)))


def prompt_clip_margins(
    data: pd.DataFrame, spec: FeatureSpec, params: dict
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[int, float]]]:
    """The prompt-aware CLIP predictor's promise margins: per model key and profiled
    step count, lambda times the spread (sd) of the cross-fitted errors there, lambda
    the smallest of LAMBDA_GRID from which on the replayed plans (`PlanReplay`, min CLIPs
    evenly over the measured range) meet their promise at `promise_level`; NO_PROMISE
    everywhere when none does. Returns (per model: the margin at its most steps, what a
    refusal quotes), metrics (MAE on unseen captions per model, lambda, the replayed
    coverage and refused share), and the step margins (`FeatureSpec.step_margin`)."""
    prompts = data["prompt_id"].astype(str)
    if prompts.nunique() < 2:
        return {}, {}, {}
    keep = data.groupby("model")["prompt_id"].transform("nunique") >= 2
    data = data[keep.to_numpy()].reset_index(drop=True)
    pred = _cross_fit(data, spec, params)
    ok = np.isfinite(pred) & one_image(data)
    data, pred = data[ok].reset_index(drop=True), pred[ok]
    replay = PlanReplay.build(data, pred)
    err = replay.pred - replay.clip
    with np.errstate(invalid="ignore"):
        spread = np.nan_to_num(np.nanstd(err, axis=0), nan=NO_PROMISE)
    y = data["clip_score"].to_numpy(dtype=float)
    min_clips = np.linspace(float(y.min()), float(y.max()), PLANNED_MIN_CLIPS)
    level = promise_level(data["prompt_id"].nunique())
    lam, cov, refused = math.inf, 1.0, 1.0
    for candidate in LAMBDA_GRID[::-1]:  # the smallest lambda from which on all hold
        c, r = replay.coverage(candidate * spread, min_clips)
        if c < level:
            break
        lam, cov, refused = float(candidate), c, r
    margins, metrics, step_margins = {}, {}, {}
    for i, key in enumerate(replay.models):
        m = np.minimum(lam * spread[i], NO_PROMISE) if math.isfinite(lam) else None
        step_margins[key] = {
            st: (float(m[j]) if m is not None else NO_PROMISE)
            for j, st in enumerate(replay.steps)
            if np.isfinite(replay.clip[:, i, j]).any()
        }
        margins[key] = step_margins[key][max(step_margins[key])]
        e = np.abs(err[:, i])
        metrics[f"mae_unseen_prompts/{key.replace('@', '_v')}"] = float(np.nanmean(e))
    metrics.update(
        {
            "promise_lambda": lam if math.isfinite(lam) else -1.0,
            "promise_replay_coverage": float(cov),
            "promise_replay_refused": float(refused),
            "promise_replay_level": level,
        }
    )
    return margins, metrics, step_margins


def train(
    df: pd.DataFrame,
    spec: FeatureSpec,
    params: dict | None = None,
    seed: int = 0,
    *,
    prompt_basis: PromptBasis | None = None,
):
    """Fit on the non-held-out rows, report metrics on the held-out ones, then refit the
    model that serves on every row. prompt_basis:
    the basis of the rows' prompt features, kept with the model (the prompt-aware CLIP
    predictor; a request's features must be computed on the same basis)."""
    spec.validate()
    params = {**DEFAULT_PARAMS, **(params or {}), "random_state": seed}
    data = usable_rows(df, spec)
    if data.empty:
        raise ValueError(f"no rows with a usable {spec.target} to train on")
    held = holdout_mask(data)
    if held.all() or not held.any():
        held = np.zeros(len(data), dtype=bool)
        held[len(data) // 2 :: 4] = True  # tiny data: a fixed quarter
    train_df, test_df = data[~held], data[held]
    spec = spec.with_categories(train_df)  # categories and step offsets: training rows only
    model = lgb.LGBMRegressor(monotone_constraints=list(spec.monotone), **params)
    start = time.perf_counter()
    y_train = spec.encode_target(train_df[spec.target].to_numpy(dtype=float), train_df)
    model.fit(spec.frame(train_df), y_train, categorical_feature=list(spec.categorical))
    train_s = time.perf_counter() - start
    pred = spec.decode_target(model.predict(spec.frame(test_df)), test_df)
    y = test_df[spec.target].astype(float).to_numpy()
    metrics = evaluate(spec, y, pred, test_df)
    if spec.target == "clip_score":
        fit_margins = prompt_clip_margins if is_prompt_aware(spec) else clip_margins
        margins, unseen, step_margins = fit_margins(data, spec, params)
        spec = spec.with_margins(margins, step_margins)
        if not is_prompt_aware(spec):  # (the prompt-aware calibration replays the zeros)
            spec = replace(spec, clip_floor=clip_floors(data))
        metrics.update(unseen)
    # The held-out rows have said what they can; the model that serves is refit on every
    # row (a third or more were held out: every caption and seed counts, and a step count
    # held out is one the planner may plan at).
    spec = spec.with_categories(data)
    model = lgb.LGBMRegressor(monotone_constraints=list(spec.monotone), **params)
    y_all = spec.encode_target(data[spec.target].to_numpy(dtype=float), data)
    model.fit(spec.frame(data), y_all, categorical_feature=list(spec.categorical))
    return TrainedModel(
        spec,
        model,
        params,
        metrics,
        len(train_df),
        len(test_df),
        train_s,
        test_df.assign(pred=pred),
        prompt_basis,
    )
