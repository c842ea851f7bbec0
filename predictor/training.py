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
from dataclasses import dataclass, field

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
}

CLIP_COVERAGE = 0.95  # the share of unseen prompts whose CLIP reaches what a plan promises
MARGIN_FOLDS = 5


def clip_margins(
    data: pd.DataFrame, spec: FeatureSpec, params: dict
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[int, float]]]:
    """Per model key, the CLIP_COVERAGE quantile of (prediction - measured CLIP) over
    prompts the predictor did not see (folds grouped by prompt id): a job's CLIP
    depends mostly on its prompt, which the predictor sees only as a token count, so a
    plan on the mean curve meets a per-image minimum about half the time. Returns the
    margins and, per model, the MAE on unseen prompts (logged with the metrics). No
    margin (0) for a model whose rows span fewer than 2 prompts (published curves).
    Third, per model and profiled step count, the margin of a promise at that step
    count (`FeatureSpec.step_margin`, what prompt-aware plans promise by): the step's own
    lower tail scaled by one per-model factor calibrated on the jobs plans would promise
    on (`planned_margin`); NO_PROMISE where no margin holds for CLIP_COVERAGE of them."""
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
    for key, r in pd.Series(resid, index=data.index).groupby(data["model"].astype(str)):
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


def train(
    df: pd.DataFrame,
    spec: FeatureSpec,
    params: dict | None = None,
    seed: int = 0,
    *,
    prompt_basis: PromptBasis | None = None,
):
    """Fit on the non-held-out rows, report metrics on the held-out ones. prompt_basis:
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
        margins, unseen, step_margins = clip_margins(data, spec, params)
        spec = spec.with_margins(margins, step_margins)
        metrics.update(unseen)
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
