"""MLflow tracking for real: registration, champion only when not worse, loading by alias,
clear errors for a missing or corrupt store, and the train/plan commands."""

from __future__ import annotations

import pytest
import yaml

from cli.main import main
from predictor.store import CHAMPION, PredictorStoreError, connect, load_predictor
from predictor.tracking import CLIP_MODEL, LATENCY_MODEL
from predictor.train_cli import train_all
from tests.conftest import make_card


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory):
    from sdaas.config import Settings

    home = tmp_path_factory.mktemp("mlhome")
    s = Settings(home=home)
    first = train_all(s, data="reference", params={"n_estimators": 60})
    worse = train_all(s, data="reference", params={"n_estimators": 1})
    return s, first, worse


@pytest.mark.slow
def test_first_run_becomes_champion_and_a_worse_one_does_not(trained_home):
    s, first, worse = trained_home
    assert first.latency.promoted and first.latency.version == "1"
    assert worse.latency.version == "2" and not worse.latency.promoted
    assert worse.latency.reason.startswith("kept champion v1")
    assert worse.latency.value > worse.latency.champion_value
    assert not worse.clip.promoted
    mlflow = connect(s, create=False)
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(LATENCY_MODEL, CHAMPION).version) == "1"
    run = client.get_run(worse.latency.run_id)
    assert run.data.tags["promoted"] == "False"
    assert run.data.params["data"] == "reference"
    assert run.data.params["data_hash"] == first.data_hash
    assert "cell_median_mape_pct" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert arts == {"plots/pred_vs_measured.png", "plots/residual_by_steps.png"}


@pytest.mark.slow
def test_champion_loads_by_alias_and_predicts_like_the_trained_model(trained_home):
    from predictor.dataset import load_training_data
    from predictor.features import LATENCY_SPEC
    from predictor.training import train

    s, first, _ = trained_home
    loaded = load_predictor(s, LATENCY_MODEL)
    assert loaded.version == "1"
    td = load_training_data(s, "reference")
    again = train(td.frame, LATENCY_SPEC, {"n_estimators": 60})
    rows = again.test.head(50)
    assert loaded.predict(rows) == pytest.approx(again.predict(rows), rel=1e-9)
    assert load_predictor(s, CLIP_MODEL).spec.target == "clip_score"


def test_missing_store_is_a_clear_error(settings):
    with pytest.raises(PredictorStoreError, match="sdaas train"):
        load_predictor(settings, LATENCY_MODEL)


def test_corrupt_store_is_a_clear_error(settings):
    db = settings.home / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database at all")
    with pytest.raises(PredictorStoreError, match="not an sqlite database"):
        load_predictor(settings, LATENCY_MODEL)


@pytest.mark.slow
def test_plan_command_exit_codes(trained_home, model_dir, tmp_path, capsys, monkeypatch):
    s, _, _ = trained_home
    # The planning home: the trained store plus a registered card the predictor can cost.
    from models.registry import Registry

    monkeypatch.setenv("SDAAS_MODEL_ROOTS", str(model_dir.parent))
    card = make_card(
        model_dir,
        name="sd-1.5",
        version="reference",
        styles=["photo"],
        resolutions=["512x512"],
        accelerators=["cuda-NVIDIA H100"],
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(card))
    Registry(s.registry_path, model_roots=(model_dir.parent.resolve(),)).register_file(
        tmp_path / "c.yaml", exist_ok=True
    )
    home = ["--home", str(s.home)]
    assert main([*home, "plan", "--style", "photo", "--latency-slo", "5", "--min-clip", "25"]) == 0
    assert "feasible: sd-1.5@reference on cuda-NVIDIA H100" in capsys.readouterr().out
    assert (
        main([*home, "plan", "--style", "photo", "--latency-slo", "0.01", "--min-clip", "25"]) == 4
    )
    assert "infeasible: fastest option" in capsys.readouterr().out
    assert main([*home, "plan", "--style", "photo", "--latency-slo", "-3", "--min-clip", "25"]) == 2
    assert "latency_slo_s: -3.0" in capsys.readouterr().err


def test_plan_without_a_store_exits_1_and_says_what_to_do(settings, model_dir, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(make_card(model_dir)))
    assert main(["--home", str(settings.home), "models", "register", str(tmp_path / "c.yaml")]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "--home",
                str(settings.home),
                "plan",
                "--style",
                "flat",
                "--latency-slo",
                "1",
                "--min-clip",
                "10",
            ]
        )
        == 1
    )
    assert "sdaas train" in capsys.readouterr().err


@pytest.mark.slow
def test_a_model_is_costed_only_where_it_was_profiled(trained_home, model_dir):
    """A card's `cuda` matches every published GPU; the planner offers only those its
    model has training rows on (sd-1.4 alone ran on the RTX A6000)."""
    from models.card import validate_card
    from predictor.planner import ModelOption, accelerators_known_to, costable

    s, _, _ = trained_home
    latency = load_predictor(s, LATENCY_MODEL)
    known = accelerators_known_to(latency)
    assert "cuda-NVIDIA RTX A6000" in known
    card = validate_card(
        make_card(model_dir, name="sd-1.5", version="reference", accelerators=["cuda"])
    )
    option = ModelOption.from_card(card, costable(card, known, latency.spec))
    assert set(option.accelerators) == set(latency.spec.profiled["sd-1.5@reference"])
    assert "cuda-NVIDIA RTX A6000" not in option.accelerators
    assert "cuda-NVIDIA H100" in option.accelerators
    unprofiled = validate_card(make_card(model_dir, name="never-profiled", accelerators=["*"]))
    assert costable(unprofiled, known, latency.spec) == []
