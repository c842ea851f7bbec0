"""bench/gpu_image.py: running here as if only the lent GPU machine's image and the carried
wheels were installed, so a missing wheel fails here and not in rare device minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.bench.bench_modules import BENCH, ROOT, load

gpu_image = load("gpu_image")
gpu_wheels = load("gpu_wheels")


def smoke_as_image(carried, out, *args, rc=0):
    """gpu_check --smoke with only the image, the project and `carried` importable, in
    every process it starts (the hook travels through PYTHONPATH's sitecustomize)."""
    env = dict(os.environ, SDAAS_AS_IMAGE="hide:" + ",".join(carried))
    env["PYTHONPATH"] = str(BENCH / "as_image")
    r = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--smoke", "--out", str(out), *args],
        cwd=ROOT, env=env, text=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == rc, r.stdout[-3000:] + r.stderr[-3000:]  # 1: a part failed
    return json.loads((out / "summary.json").read_text())["parts"]


def test_the_carried_wheels_are_all_the_first_parts_need(tmp_path):
    carried = gpu_wheels.carried(["unet_step", "engine"])
    assert {"diffusers", "pydantic", "pydantic-core"} <= set(carried)
    assert not set(carried) & gpu_image.IMAGE  # the image's own never travel
    parts = smoke_as_image(carried, tmp_path, "--parts", "unet_step,engine")
    assert {k: v["status"] for k, v in parts.items()} == {"unet_step": "ok", "engine": "ok"}


def test_a_wheel_left_behind_fails_here_as_it_would_there(tmp_path):
    carried = [d for d in gpu_wheels.carried(["unet_step", "engine"]) if d != "pydantic"]
    parts = smoke_as_image(carried, tmp_path, "--parts", "unet_step,engine", rc=1)
    assert parts["unet_step"]["status"] == "ok"  # the UNet alone needs no card
    assert parts["engine"]["status"] == "error"
    assert "pydantic" in parts["engine"]["error"]


def test_hidden_distributions_look_absent_to_probes_and_imports():
    code = (
        "import importlib.util, sys; sys.path.insert(0, sys.argv[1]); import gpu_image;"
        "gpu_image.hide([]);"
        "assert importlib.util.find_spec('lightgbm') is None;"  # a probe answers 'absent'
        "assert importlib.util.find_spec('torch') is not None;"  # on the image
        "import torch\n"
        "try:\n import lightgbm\nexcept ModuleNotFoundError: print('hidden')"
    )
    r = subprocess.run([sys.executable, "-c", code, str(BENCH)], text=True,
                       capture_output=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "hidden"


def test_closure_pins_what_is_installed_here_and_skips_the_image():
    pins = gpu_image.closure(["pydantic"])
    import pydantic

    assert pins["pydantic"] == pydantic.VERSION
    assert "pydantic-core" in pins and "typing-extensions" not in pins  # on the image
    assert gpu_image.norm("Typing_Extensions") == "typing-extensions"
