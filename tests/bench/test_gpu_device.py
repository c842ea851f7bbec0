"""bench/gpu_device.py, the script that runs on the lent GPU machine: it installs the wheels
each call carries (chunks joined, sha256 checked), keeps them between calls, and refuses
to start a part whose wheels have not all arrived."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import zipfile

import pytest

from tests.bench.bench_modules import load

gpu_device = load("gpu_device")


def make_wheel(folder, name: str, version: str = "0.1"):
    """A minimal pure-Python wheel: `import name` gives VALUE = 42."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        z.writestr(f"{info}/WHEEL", wheel)
        z.writestr(f"{info}/RECORD", "")
    return path


def lay_out(root, stages: dict[int, list], first: list[str]):
    """.whl/stageN/ as gpu_wheels.py leaves them: files (whole or chunks) plus the plan."""
    wheels = {}
    for files in stages.values():
        for f in files:
            if f.name.endswith(".whl"):
                wheels[f.name] = {"bytes": f.stat().st_size,
                                  "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}  # fmt: skip
    listed = [{"stage": i, "files": [f.name for f in fs]} for i, fs in stages.items()]
    plan = {"wheels": wheels, "first": first, "stages": listed}
    for i, files in stages.items():
        d = root / ".whl" / f"stage{i}"
        d.mkdir(parents=True)
        for f in files:
            (d / f.name).write_bytes(f.read_bytes())
        (d / "plan.json").write_text(json.dumps(plan))
    return plan


def carry(here, root, i):
    """What a device call's carry leaves there: .whl/ holds its own stage alone."""
    shutil.rmtree(root / ".whl", ignore_errors=True)
    shutil.copytree(here / ".whl" / f"stage{i}", root / ".whl" / f"stage{i}")


def test_stages_install_across_calls_and_chunks_join(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    alpha, beta = make_wheel(src, "alpha_pkg"), make_wheel(src, "beta_pkg")
    data = beta.read_bytes()
    half = len(data) // 2
    p1, p2 = src / f"{beta.name}.part01", src / f"{beta.name}.part02"
    p1.write_bytes(data[:half]), p2.write_bytes(data[half:])
    here, root = tmp_path / "here", tmp_path / "there"
    plan = lay_out(here, {1: [alpha, p1], 2: [p2]}, first=[alpha.name])
    plan["wheels"][beta.name] = {"bytes": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    for i in (1, 2):
        (here / ".whl" / f"stage{i}" / "plan.json").write_text(json.dumps(plan))

    carry(here, root, 1)  # call 1
    assert gpu_device.main(["--install-only"], root=root) == 0
    lib = root / ".site" / "lib"
    assert (lib / "alpha_pkg" / "__init__.py").is_file()
    assert not (lib / "beta_pkg").exists()  # half of it has come
    # the first parts may run; the rest would start without its wheels: refused
    assert gpu_device.missing(plan, [alpha.name], {"unet_step", "engine"}) == []
    assert gpu_device.main(["--parts", "sim_to_real", "--smoke"], root=root) == 3

    carry(here, root, 2)  # call 2 on the same (warm) machine: .site/ kept
    assert gpu_device.main(["--install-only"], root=root) == 0
    assert (lib / "beta_pkg" / "__init__.py").read_text() == "VALUE = 42\n"
    assert sorted((root / ".site" / "installed.txt").read_text().split()) == sorted(
        [alpha.name, beta.name])  # fmt: skip


def test_a_damaged_wheel_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    w = make_wheel(src, "gamma_pkg")
    root = tmp_path / "repo"
    lay_out(root, {1: [w]}, first=[w.name])
    (root / ".whl" / "stage1" / w.name).write_bytes(b"not the wheel")
    with pytest.raises(SystemExit, match="sha256"):
        gpu_device.main(["--install-only"], root=root)


def test_without_a_plan_it_says_what_to_run_first(tmp_path):
    with pytest.raises(SystemExit, match="gpu_wheels.py"):
        gpu_device.main(["--install-only"], root=tmp_path)


def test_the_parts_a_command_asks_for():
    assert gpu_device.wanted_parts(["--out", "x", "--parts", "unet_step,engine"]) == {
        "unet_step", "engine"}  # fmt: skip
    assert gpu_device.wanted_parts(["--parts=sim_to_real"]) == {"sim_to_real"}
    assert gpu_device.wanted_parts([]) == {"unet_step", "engine", "sim_to_real"}
    assert sys.executable  # the machine's own Python runs it: standard library only
