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
