"""Runs on the lent GPU machine: install the carried wheels, then run the GPU check.

`bench/gpu_wheels.py` (run here first) puts the wheels the machine's image lacks into
`.whl/stageN/` and prints the device calls: each carries one stage and runs this script.
Every call gathers the stage it brought into `.site/` (ignored by git, so a warm machine
keeps it between calls), joins wheels that came in chunks (checked against the plan's
sha256), installs what is new with pip (no index, no dependencies: the plan pinned them
all), and then, unless `--install-only`, runs `bench/gpu_check.py` with the remaining
arguments and `.site/lib` first on PYTHONPATH. A run whose parts need wheels that have
not arrived stops before any GPU work and says which calls are missing: the machine was
given back between calls (it stays warm 30 s) and `.site/` went with it.

Standard library only: it runs on the machine's own Python (3.12) before anything is
installed.

  python3 bench/gpu_device.py --install-only
  python3 bench/gpu_device.py --out $OUT --parts unet_step,engine
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTS = {"unet_step", "engine"}  # what stage 1's wheels serve on their own


def paths(root: Path) -> tuple[Path, Path, Path]:
    """The carried stages, the wheels kept between calls, pip's target."""
    return root / ".whl", root / ".site" / "wheels", root / ".site" / "lib"


def gather(root: Path) -> dict:
    """Copy every carried stage's files into the kept folder; the plan that came with
    them (every stage brings the same one)."""
    whl, store, _ = paths(root)
    store.mkdir(parents=True, exist_ok=True)
    plan = None
    for stage in sorted(whl.glob("stage*")):
        for f in stage.iterdir():
            if f.name == "plan.json":
                plan = json.loads(f.read_text())
            else:
                shutil.copy2(f, store / f.name)
    if plan is None and (store / "plan.json").is_file():
        plan = json.loads((store / "plan.json").read_text())
    if plan is None:
        raise SystemExit(
            "no .whl/stageN/plan.json here: run `python bench/gpu_wheels.py` on the "
            "developer machine and name a stage in the call's carry"
        )
    (store / "plan.json").write_text(json.dumps(plan))
    return plan


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def join(store: Path, plan: dict) -> None:
    """Join a wheel whose chunks have all arrived; check it against the plan."""
    for name, want in plan["wheels"].items():
        chunks = sorted(store.glob(f"{name}.part*"))
        if (store / name).is_file() or not chunks:
            continue
        total = sum(c.stat().st_size for c in chunks)
        if total < want["bytes"]:
            continue  # more chunks to come in a later call
        with open(store / name, "wb") as out:
            for c in chunks:
                out.write(c.read_bytes())
        for c in chunks:
            c.unlink()


def install(root: Path, plan: dict) -> list[str]:
    """pip-install every whole, verified wheel not installed yet; the installed names."""
    _, store, lib = paths(root)
    done_file = root / ".site" / "installed.txt"
    done = set(done_file.read_text().split()) if done_file.is_file() else set()
    new = []
    for name, want in sorted(plan["wheels"].items()):
        f = store / name
        if name in done or not f.is_file():
            continue
        if digest(f) != want["sha256"]:
            raise SystemExit(f"{name}: sha256 differs from the plan (a broken transfer?)")
        new.append(name)
    if new:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
             "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(lib),
             *(str(store / n) for n in new)],
            check=True,
        )  # fmt: skip
        done |= set(new)
        done_file.write_text("\n".join(sorted(done)) + "\n")
    return sorted(done)


def wanted_parts(argv: list[str]) -> set[str]:
    """The parts a gpu_check command line asks for (all three when it names none)."""
    for i, a in enumerate(argv):
        if a == "--parts" and i + 1 < len(argv):
            return set(argv[i + 1].split(","))
        if a.startswith("--parts="):
            return set(a.split("=", 1)[1].split(","))
    return {"unet_step", "engine", "sim_to_real"}


def missing(plan: dict, installed: list[str], parts: set[str]) -> list[str]:
    """Wheels the parts need that are not installed: stage 1's for unet_step and engine,
    every wheel for sim_to_real."""
    need = set(plan["first"]) if parts <= FIRST_PARTS else set(plan["wheels"])
    return sorted(need - set(installed))


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    install_only = "--install-only" in argv
    argv = [a for a in argv if a != "--install-only"]
    plan = gather(root)
    join(paths(root)[1], plan)
    installed = install(root, plan)
    print(f"gpu_device: {len(installed)} of {len(plan['wheels'])} wheels installed in .site/lib")
    if install_only:
        return 0
    lacking = missing(plan, installed, wanted_parts(argv))
    if lacking:
        stages = sorted(
            s["stage"]
            for s in plan["stages"]
            if any(f.split(".whl")[0] + ".whl" in lacking for f in s["files"])
        )
        print(
            f"gpu_device: {len(lacking)} wheels these parts need have not arrived "
            f"(stages {stages}): the machine was given back between calls and .site/ "
            "went with it, or a call was skipped. Make the calls again from call 1 "
            "(.whl/plan.json lists them).",
            file=sys.stderr,
        )
        return 3
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(paths(root)[2]), str(root)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    cmd = [sys.executable, str(root / "bench" / "gpu_check.py"), *argv]
    return subprocess.run(cmd, cwd=root, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
