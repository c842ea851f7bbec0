"""One accelerator naming scheme: local devices, published GPUs and cluster kinds."""

from __future__ import annotations

import pytest

from sdaas.accelerator_names import accelerator_name, backend_of, kind_of


@pytest.mark.parametrize(
    ("backend", "device", "name"),
    [
        ("cpu", "Intel(R) Xeon(R) CPU @ 2.20GHz", "cpu-Intel Xeon CPU @ 2.20GHz"),
        ("cuda", "NVIDIA H100 80GB HBM3", "cuda-NVIDIA H100 80GB HBM3"),
        ("cuda", "cuda-NVIDIA T4", "cuda-NVIDIA T4"),  # already in the scheme
        ("cpu", "  ", "cpu-unknown"),
    ],
)
def test_accelerator_name(backend, device, name):
    assert accelerator_name(backend, device) == name
    assert backend_of(name) == backend


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend 'tpu'"):
        accelerator_name("tpu", "v5e")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("cuda-NVIDIA A100 (DiffServe)", "A100"),
        ("cuda-NVIDIA A100-SXM4-80GB", "A100"),
        ("cuda-Tesla V100-SXM2-16GB", "V100"),
        ("cuda-NVIDIA H100 80GB HBM3", "H100"),
        ("cuda-NVIDIA RTX A6000", "A6000"),
        ("cuda-NVIDIA T4", "T4"),
        ("cpu-AMD EPYC 7B13", "cpu"),
        ("X", "X"),
    ],
)
def test_kind_of(name, kind):
    assert kind_of(name) == kind


def test_profiles_catalog_and_serving_share_the_scheme():
    """Every reference row and every local device is named `<backend>-...`, and each
    cluster kind is the kind of the profile it takes latencies from."""
    import pyarrow.parquet as pq

    from models.accelerators import local_accelerators
    from profiles.reference import REFERENCE_DIR
    from scheduler.catalog import KIND_LABELS

    names = set(
        pq.read_table(REFERENCE_DIR / "reference_profiles.parquet")["accelerator"].to_pylist()
    )
    assert names and all(backend_of(n) == "cuda" for n in names)
    assert all(backend_of(a.name) in ("cpu", "cuda") for a in local_accelerators())
    assert all(kind_of(label) == kind and label in names for kind, label in KIND_LABELS.items())
