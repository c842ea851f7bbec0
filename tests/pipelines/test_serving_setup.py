"""Serving's spec: a bad residency bound is refused before anything loads."""

from __future__ import annotations

import pytest

from pipelines.serving_setup import build_spec
from sdaas.config import Settings
from sdaas.errors import InvalidInputError


@pytest.mark.parametrize("bound", [0, -1, 1.5])
def test_a_residency_bound_must_be_a_positive_integer(tmp_path, bound):
    with pytest.raises(InvalidInputError, match="--max-resident"):
        build_spec(Settings(home=tmp_path), max_resident=bound)


def test_cpu_engines_default_to_the_threads_the_sweep_profiled_at(serving_settings):
    """A profile holds as served only if the sweep and the engines ran torch at the same
    threads: one rule, `cpu_threads`."""
    from models.backend import cpu_threads

    assert build_spec(serving_settings).threads == cpu_threads(1)
    assert build_spec(serving_settings, threads=3).threads == 3  # said is said
