"""LightGBM training for the latency and CLIP predictors.

Monotone in steps via `monotone_constraints`, with the constraint vector validated first,
and the latency target reshaped so plain trees interpolate between profiled step counts
(see features.py). Measured alternatives, held-out latency MAPE on the quick tiny-model
sweep: latency itself with linear trees 49 %; log(latency / (steps + k_g)) with linear
trees 29 %, with plain trees 13 % (cell medians 12 %).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd

from predictor.dataset import holdout_mask
from predictor.features import FeatureSpec, mae, mape

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


CLIP_COVERAGE = 0.95  # the share of unseen prompts whose CLIP reaches what a plan promises
MARGIN_FOLDS = 5


def clip_margins(
    data: pd.DataFrame, spec: FeatureSpec, params: dict
) -> tuple[dict[str, float], dict[str, float]]:
    """Per model key, the CLIP_COVERAGE quantile of (prediction - measured CLIP) over
    prompts the predictor did not see (folds grouped by prompt id): a job's CLIP
    depends mostly on its prompt, which the predictor sees only as a token count, so a
    plan on the mean curve meets a per-image minimum about half the time. Returns the
    margins and, per model, the MAE on unseen prompts (logged with the metrics). No
    margin (0) for a model whose rows span fewer than 2 prompts (published curves)."""
    prompts = data["prompt_id"].astype(str)
    unique = sorted(prompts.unique())
    if len(unique) < 2:
        return {}, {}
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
    margins, mae_unseen = {}, {}
    for key, r in pd.Series(resid, index=data.index).groupby(data["model"].astype(str)):
        if data.loc[r.index, "prompt_id"].nunique() < 2:
            continue
        margins[key] = max(0.0, float(np.quantile(r, CLIP_COVERAGE)))
        mae_unseen[f"mae_unseen_prompts/{key.replace('@', '_v')}"] = float(np.abs(r).mean())
    return margins, mae_unseen


def train(df: pd.DataFrame, spec: FeatureSpec, params: dict | None = None, seed: int = 0):
    """Fit on the non-held-out rows, report metrics on the held-out ones."""
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
        margins, unseen = clip_margins(data, spec, params)
        spec = spec.with_margins(margins)
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
    )
