"""bench/gpu_wheels.py: the carried wheels split into device calls that each fit beside the
working tree, stage 1 able to run the first parts on its own."""

from __future__ import annotations

import pytest

from tests.bench.bench_modules import load

gpu_wheels = load("gpu_wheels")
MIB = gpu_wheels.MIB


def test_stage_one_holds_the_first_parts_and_no_stage_overflows():
    sizes = {"diffusers.whl": 6, "pydantic.whl": 1, "beam.whl": 19, "polars.whl": 20,
             "kafka.whl": 5, "tiny.whl": 1}  # fmt: skip
    stages = gpu_wheels.plan_stages(sizes, {"diffusers.whl", "pydantic.whl"}, room=25)
    assert {"diffusers.whl", "pydantic.whl"} <= set(stages[0])
    assert sorted(f for s in stages for f in s) == sorted(sizes)  # each once
    assert all(sum(sizes[f] for f in s) <= 25 for s in stages)
    assert len(stages) == 3  # 52 in all: three calls of 25 at most


def test_a_first_stage_too_large_is_refused_with_the_numbers():
    with pytest.raises(SystemExit, match="first stage"):
        gpu_wheels.plan_stages({"a.whl": 30 * MIB}, {"a.whl"}, room=20 * MIB)


def test_a_wheel_larger_than_a_call_travels_in_chunks():
    items = gpu_wheels.chunked({"big.whl": 50, "small.whl": 3}, room=20)
    assert items["small.whl"] == 3
    chunks = {k: v for k, v in items.items() if k.startswith("big.whl.part")}
    assert sorted(chunks) == ["big.whl.part01", "big.whl.part02", "big.whl.part03",
                              "big.whl.part04", "big.whl.part05"]  # fmt: skip
    assert sum(chunks.values()) == 50 and max(chunks.values()) <= 10


def test_chunks_written_from_a_wheel_join_back_to_it(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir(), dest.mkdir()
    data = bytes(range(256)) * 40  # 10,240 bytes
    (src / "big.whl").write_bytes(data)
    names = [k for k in gpu_wheels.chunked({"big.whl": len(data)}, room=8192)]
    for n in names:
        gpu_wheels.write_chunks(src, n, 4096, dest)
    assert b"".join((dest / n).read_bytes() for n in sorted(names)) == data


def test_the_calls_run_the_first_parts_first_and_the_rest_last():
    calls = gpu_wheels.calls(4, ["unet_step", "engine", "sim_to_real"])
    assert [c["carry"] for c in calls] == [[f".whl/stage{i}"] for i in range(1, 5)]
    assert calls[0]["command"].endswith("--parts unet_step,engine")
    assert all("--install-only" in c["command"] for c in calls[1:3])
    assert calls[3]["command"].endswith("--parts sim_to_real")
    one = gpu_wheels.calls(1, ["unet_step", "engine"])
    assert len(one) == 1 and one[0]["command"].endswith("--parts unet_step,engine")


def test_every_call_fits_the_device_tools_limit_beside_this_tree():
    room = int((gpu_wheels.LIMIT_MIB - gpu_wheels.MARGIN_MIB) * MIB) - gpu_wheels.tree_bytes()
    assert room > 20 * MIB, "the working tree leaves little room for wheels in a device call"
