"""MLflow tracking and the model registry for the predictors.

Every training run logs, into the predictor store of the sdaas home (`store.py`), its
parameters, the profile data hash and row counts, held-out metrics, two plots and the
model, and registers it (`sdaas-latency`, `sdaas-clip`). The new version becomes
`champion` only if it is no worse than the current champion *on the same held-out rows*;
the run says which way that went and why.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor.store import CHAMPION, SPEC_ARTIFACT, connect, load_registered, store_paths
from predictor.training import TrainedModel, evaluate
from sdaas.config import Settings

log = logging.getLogger(__name__)

EXPERIMENT = "sdaas-predictors"
LATENCY_MODEL = "sdaas-latency"
CLIP_MODEL = "sdaas-clip"
# CLIP from the prompt's features (`predictor.prompt_features`), with its basis artifact
PROMPT_CLIP_MODEL = "sdaas-clip-prompt"


def _experiment_id(mlflow, settings: Settings) -> str:
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    artifacts = store_paths(settings)[1].resolve().as_uri()
    return mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)


@dataclass(frozen=True)
class TrackedModel:
    name: str
    version: str
    run_id: str
    metric: str
    value: float
    champion_value: float | None
    promoted: bool
    reason: str


def _plots(trained: TrainedModel, out_dir: Path) -> list[Path]:
    import matplotlib  # only when plotting; Agg is chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = trained.test
    target = trained.spec.target
    y, p = t[target].to_numpy(dtype=float), t["pred"].to_numpy(dtype=float)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, p, s=8, alpha=0.6)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], color="black", lw=1)
    ax.set(
        xlabel=f"measured {target}",
        ylabel=f"predicted {target}",
        title=f"{target}: held-out predicted vs measured",
    )
    fig.tight_layout()
    paths.append(out_dir / "pred_vs_measured.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    resid = (p - y) / y * 100 if target == "latency_s" else p - y
    ax.scatter(t["steps"], resid, s=8, alpha=0.6)
    ax.axhline(0, color="black", lw=1)
    ax.set(
        xlabel="steps",
        ylabel="residual (%)" if target == "latency_s" else "residual",
        title=f"{target}: held-out residual by steps",
    )
    fig.tight_layout()
    paths.append(out_dir / "residual_by_steps.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def headline_metric(trained: TrainedModel) -> str:
    return "cell_median_mape_pct" if trained.spec.target == "latency_s" else "mae"


def champion_score(mlflow, name: str, trained: TrainedModel, metric: str) -> tuple[float, str]:
    """The current champion's metric on the new run's held-out rows (inf if none/unusable)."""
    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # noqa: BLE001 - no registered model or no alias yet
        return math.inf, "no champion yet"
    try:
        champ = load_registered(mlflow, name, mv)
        mine, theirs = trained.prompt_basis, champ.prompt_basis
        if mine is not None and (theirs is None or theirs.id != mine.id):
            # its features mean other directions: it cannot score these rows
            return math.inf, f"champion v{mv.version} is on another prompt basis"
        pred = champ.predict(trained.test)
    except Exception as exc:  # noqa: BLE001 - an unloadable champion loses
        return math.inf, f"champion v{mv.version} could not be scored ({type(exc).__name__})"
    if not np.all(np.isfinite(pred)):
        return math.inf, f"champion v{mv.version} cannot score these rows"
    y = trained.test[trained.spec.target].to_numpy(dtype=float)
    return evaluate(trained.spec, y, pred, trained.test)[metric], f"champion v{mv.version}"


def log_and_register(
    settings: Settings,
    name: str,
    trained: TrainedModel,
    *,
    data_choice: str,
    data_hash: str,
    sources: dict[str, int],
    promote: bool = True,
    why_not: str = "",
    noisy: tuple[str, ...] = (),
) -> TrackedModel:
    """why_not: the reason promotion was withheld, when it was (noisy profiles); noisy:
    which measured fits were flagged, tagged on the run ("" when none)."""
    mlflow = connect(settings, create=True)
    exp_id = _experiment_id(mlflow, settings)
    metric = headline_metric(trained)
    value = float(trained.metrics[metric])
    champ_value, champ_desc = champion_score(mlflow, name, trained, metric)
    better = value <= champ_value
    with mlflow.start_run(experiment_id=exp_id, run_name=name) as run:
        mlflow.log_params({f"lgbm.{k}": v for k, v in trained.params.items()})
        mlflow.log_params(
            {
                "target": trained.spec.target,
                "target_mode": trained.spec.target_mode,
                "features": ",".join(trained.spec.features),
                "monotone": ",".join(map(str, trained.spec.monotone)),
                "data": data_choice,
                "data_hash": data_hash,
                "rows_train": trained.train_rows,
                "rows_test": trained.test_rows,
                "prompt_basis": trained.prompt_basis.id if trained.prompt_basis else "none",
                **{f"rows_source_{k}": v for k, v in sorted(sources.items())},
            }
        )
        mlflow.log_metrics({**trained.metrics, "train_s": trained.train_s})
        with tempfile.TemporaryDirectory() as tmp:
            for path in _plots(trained, Path(tmp)):
                mlflow.log_artifact(str(path), artifact_path="plots")
            spec_path = Path(tmp) / SPEC_ARTIFACT
            spec_path.write_text(trained.spec.to_json())
            mlflow.log_artifact(str(spec_path))
            if trained.prompt_basis is not None:  # numbers only: never a prompt's text
                basis_path = trained.prompt_basis.save(Path(tmp))
                mlflow.log_artifact(str(basis_path))
        info = mlflow.lightgbm.log_model(
            trained.model,
            name="model",
            registered_model_name=name,
            pip_requirements=["lightgbm", "scikit-learn", "pandas"],  # skip slow inference
        )
        version = str(info.registered_model_version)
        client = mlflow.MlflowClient()
        if not promote:
            promoted, reason = False, why_not or "promotion disabled (--no-promote)"
        elif better:
            client.set_registered_model_alias(name, CHAMPION, version)
            promoted = True
            reason = (
                f"promoted: {metric} {value:.4f} <= {champ_value:.4f} ({champ_desc})"
                if math.isfinite(champ_value)
                else f"promoted: {champ_desc}"
            )
        else:
            promoted = False
            reason = f"kept {champ_desc}: new {metric} {value:.4f} > {champ_value:.4f}"
        mlflow.set_tags(
            {
                "promotion": reason,
                "promoted": str(promoted),
                "data_hash": data_hash,
                "noisy_profiles": "; ".join(noisy)[:5000] or "none",
            }
        )
        mlflow.log_metric("noisy_fits", len(noisy))
        client.set_model_version_tag(name, version, "data_hash", data_hash)
        client.set_model_version_tag(name, version, metric, f"{value:.6g}")
        log.info("%s v%s: %s", name, version, reason)
    return TrackedModel(
        name,
        version,
        run.info.run_id,
        metric,
        value,
        None if not math.isfinite(champ_value) else champ_value,
        promoted,
        reason,
    )
