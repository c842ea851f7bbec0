"""Accelerator naming and the --devices flag."""

from __future__ import annotations

import pytest

from models.accelerators import cpu_accelerator, cuda_accelerators, resolve_devices
from sdaas.errors import InvalidInputError


def test_cpu_is_named_from_the_platform():
    acc = cpu_accelerator()
    assert acc.device == "cpu"
    assert acc.name.startswith("cpu-") and len(acc.name) > 4
    assert "(R)" not in acc.name


def test_auto_picks_cuda_devices_or_cpu():
    auto = resolve_devices(None)
    assert auto == (cuda_accelerators() or [cpu_accelerator()])


@pytest.mark.parametrize("bad", ["tpu", "cuda:99", "gpu0"])
def test_unknown_devices_are_refused_with_the_flag_named(bad):
    with pytest.raises(InvalidInputError, match=f"--devices: '{bad}'"):
        resolve_devices([bad])


def test_cpu_listed_twice_is_profiled_once():
    assert resolve_devices(["cpu", "cpu"]) == [cpu_accelerator()]
