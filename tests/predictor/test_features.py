"""Feature specs: the checks that keep LightGBM from aborting, and the latency reshaping."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from predictor.features import (
    LATENCY_SPEC,
    FeatureSpec,
    add_derived_columns,
    fit_step_offsets,
)


def test_monotone_on_a_categorical_is_refused_before_training():
    bad = FeatureSpec("y", ("model", "steps"), ("model",), (1, 1))
    with pytest.raises(ValueError, match=r"monotone\[model\] = 1: .*aborts LightGBM"):
        bad.validate()
    with pytest.raises(ValueError, match="2 features"):
        FeatureSpec("y", ("a", "b"), (), (1,)).validate()
    with pytest.raises(ValueError, match="must be -1, 0 or 1"):
        FeatureSpec("y", ("a",), (), (2,)).validate()


def test_train_with_a_bad_spec_raises_instead_of_aborting_the_process():
    code = (
        "import pandas as pd\n"
        "from predictor.features import FeatureSpec\n"
        "from predictor.training import train\n"
        "df = pd.DataFrame({'model': ['a', 'b'] * 10, 'steps': list(range(20)),"
        " 'y': [float(i) for i in range(20)], 'seed': [0] * 20})\n"
        "try:\n"
        "    train(df, FeatureSpec('y', ('model', 'steps'), ('model',), (1, 1)))\n"
        "except ValueError as e:\n"
        "    print('refused:', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr  # not 134 (LightGBM's abort)
    assert "refused:" in proc.stdout


def test_spec_json_round_trip_keeps_categories_and_offsets():
    df = add_derived_columns(
        pd.DataFrame(
            {
                "model": ["m"] * 4,
                "model_version": ["1"] * 4,
                "accelerator": ["gpu"] * 4,
                "steps": [1, 2, 4, 8],
                "height": [64] * 4,
                "width": [64] * 4,
                "batch_size": [1] * 4,
                "guidance_scale": [7.5] * 4,
                "latency_s": [0.3, 0.4, 0.6, 1.0],
            }
        )
    )
    spec = LATENCY_SPEC.with_categories(df)
    again = FeatureSpec.from_json(spec.to_json())
    assert again == spec
    assert again.categories["model"] == ["m@1"]
    (k,) = again.step_offsets.values()
    assert k == pytest.approx(2.0)  # 0.2 + 0.1 * steps -> k = a / b = 2


def test_step_offsets_recover_the_fixed_part_and_decode_inverts_encode():
    steps = np.array([1, 2, 5, 10, 20, 50] * 2, dtype=float)
    df = pd.DataFrame(
        {
            "model": ["a@1"] * 6 + ["b@1"] * 6,
            "accelerator": ["x"] * 12,
            "batch_size": [1] * 12,
            "pixels": [4096.0] * 12,
            "steps": steps,
            "latency_s": np.r_[0.05 * (steps[:6] + 3), 0.2 * (steps[6:] + 0.5)],
        }
    )
    offsets = fit_step_offsets(df, "latency_s")
    assert offsets["a@1|x|1|4096.0"] == pytest.approx(3.0)
    assert offsets["b@1|x|1|4096.0"] == pytest.approx(0.5)
    spec = FeatureSpec("latency_s", ("steps",), (), (1,), {}, "log_per_step", offsets)
    y = df["latency_s"].to_numpy()
    encoded = spec.encode_target(y, df)
    assert np.allclose(encoded[:6], np.log(0.05))  # flat in steps: what trees fit best
    assert np.allclose(spec.decode_target(encoded, df), y)


def test_unseen_category_is_missing_not_a_wrong_code():
    spec = FeatureSpec("y", ("model", "steps"), ("model",), (0, 1), {"model": ["a", "b"]})
    frame = spec.frame(pd.DataFrame({"model": ["b", "zzz"], "steps": [1, 2]}))
    assert frame["model"].cat.codes.tolist() == [1, -1]
