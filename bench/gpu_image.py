"""The lent GPU machine's Python, and a way to run here as if only it were installed.

A lent GPU machine (the workplace's device tool, KINDS.md, read 2026-11-17) runs Python
3.12 with an image of its own: torch, transformers, numpy and ~200 more, but none of
diffusers, pydantic, Beam, LightGBM, MLflow, polars or Kafka. Nothing can be fetched
there: what the one-shot GPU check needs beyond the image travels as wheels
(`bench/gpu_wheels.py`, pinned to the versions installed here). Device minutes are rare,
so a missing wheel must show up here, not there: `hide()` makes every installed
distribution that is neither on the image nor carried look absent.
`bench/as_image/sitecustomize.py` applies it to every process of a run (sim-to-real
spawns a broker, Beam and device processes) from the environment:

  SDAAS_AS_IMAGE=hide:<dist,dist,...>   hide all but the image and these (carried) dists
  SDAAS_AS_IMAGE=record:<file>          append each distribution a process imports

Approximations: a top-level name owned by several distributions (the `google` namespace)
is allowed when any of them is; so is what the image's packages need at the versions
installed here (`image_needs`); torch's and the image's versions differ from this
venv's (torch 2.11 there, 2.13 here): hiding catches what is missing, not what moved.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import re
import sys

IMAGE_PYTHON = "3.12"
# versions read there (a session's pip list, 2026-11): the ones the check leans on
IMAGE_VERSIONS = {
    "torch": "2.11.0",
    "transformers": "5.17.0",
    "huggingface-hub": "1.33.0",
    "numpy": "2.5.2",
    "safetensors": "0.8.0",
    "accelerate": "1.15.0",
    "tokenizers": "0.23.2",
}
# the image's distributions (KINDS.md "Python packages already there"), names normalised
IMAGE = frozenset((
    "absl-py", "accelerate", "aiofiles", "aiohappyeyeballs", "aiohttp", "aiosignal",
    "annotated-doc", "anyio", "attrs", "botorch", "build", "certifi", "charset-normalizer",
    "chex", "click", "cloudpickle", "cmake", "colorama", "contourpy", "coverage",
    "cuda-bindings", "cuda-core", "cuda-pathfinder", "cuda-toolkit", "cupy-cuda13x", "cycler",
    "cython", "diffrax", "e3nn", "einops", "equinox", "etils", "execnet", "filelock",
    "flatbuffers", "flax", "fonttools", "formulaic", "frozenlist", "fsspec", "gpytorch",
    "grpcio", "h11", "h5py", "hf-xet", "httpcore", "httpx", "huggingface-hub", "humanize",
    "hypothesis", "idna", "imageio", "iniconfig", "interface-meta", "jax", "jax-cuda13-pjrt",
    "jax-cuda13-plugin", "jaxlib", "jaxtyping", "jinja2", "joblib", "kiwisolver",
    "lazy-loader", "lightning", "lightning-utilities", "linear-operator", "lineax", "llvmlite",
    "lxml", "markdown", "markdown-it-py", "markupsafe", "matplotlib", "mdurl", "meson",
    "ml-dtypes", "mpi4py", "mpmath", "msgpack", "multidict", "multipledispatch",
    "mypy-extensions", "nanobind", "narwhals", "networkx", "ninja", "numba", "numba-cuda",
    "numpy", "numpyro", "nvidia-cublas", "nvidia-cuda-cupti", "nvidia-cuda-nvrtc",
    "nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-cufft", "nvidia-cufile",
    "nvidia-curand", "nvidia-cusolver", "nvidia-cusparse", "nvidia-cusparselt-cu13",
    "nvidia-ml-py", "nvidia-nccl-cu13", "nvidia-nvjitlink", "nvidia-nvshmem-cu13",
    "nvidia-nvtx", "onnx", "onnx-ir", "onnxruntime", "onnxscript", "opencv-python-headless",
    "opt-einsum", "opt-einsum-fx", "optax", "optimistix", "orbax-checkpoint", "packaging",
    "pandas", "pathspec", "patsy", "peft", "pillow", "pip", "pluggy", "portalocker",
    "prometheus-client", "propcache", "protobuf", "psutil", "py-cpuinfo", "pyarrow",
    "pybind11", "pygments", "pyparsing", "pyproject-hooks", "pyre-extensions", "pytest",
    "pytest-benchmark", "pytest-cov", "pytest-mock", "pytest-timeout", "pytest-xdist",
    "python-dateutil", "pytorch-lightning", "pyyaml", "regex", "requests", "rich", "sacrebleu",
    "safetensors", "scikit-build-core", "scikit-image", "scikit-learn", "scipy", "seaborn",
    "sentence-transformers", "sentencepiece", "setuptools", "shellingham", "simplejson", "six",
    "sortedcontainers", "statsmodels", "sympy", "tabulate", "tensorboard",
    "tensorboard-data-server", "tensorstore", "threadpoolctl", "tifffile", "tiktoken", "timm",
    "tokenizers", "toolz", "torch", "torch-geometric", "torchaudio", "torchdiffeq",
    "torchmetrics", "torchvision", "tqdm", "transformers", "treescope", "triton", "typer",
    "typing-extensions", "typing-inspect", "urllib3", "uvloop", "wadler-lindig", "werkzeug",
    "wheel", "wrapt", "xarray", "xxhash", "yarl", "zipp",
))  # fmt: skip
# the project itself travels as the working tree (PYTHONPATH=. there)
PROJECT = "sdaas"
ENV = "SDAAS_AS_IMAGE"


def norm(name: str) -> str:
    """A distribution's name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def owners() -> dict[str, set[str]]:
    """Top-level import name -> the installed distributions that provide it."""
    return {
        top: {norm(d) for d in dists}
        for top, dists in importlib.metadata.packages_distributions().items()
    }


def hide(carried) -> None:
    """From now on, this process imports only the image's, the project's and `carried`
    distributions: every other top-level name is set to None in sys.modules, which is how
    Python marks a module absent (an import raises ModuleNotFoundError, and a probe with
    importlib.util.find_spec answers None, as it would there)."""
    allowed = IMAGE | {PROJECT} | {norm(d) for d in carried} | image_needs()
    for top, dists in owners().items():
        if top not in sys.modules and not dists & allowed:
            sys.modules[top] = None


def image_needs() -> set[str]:
    """What the image's distributions need at the versions installed here, transitively
    (huggingface-hub 2.4 here needs httpx2; 1.33 there does not): allowed, since there
    the image brings what its own versions need; never one the project itself requires
    (typer here needs pydantic, which the image lacks: the project's cards need it)."""
    installed = {norm(d.metadata["Name"]) for d in importlib.metadata.distributions()}
    seen: set[str] = set()
    todo = [d for d in IMAGE if d in installed]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(r for r in requirements(name) if r in installed)
    return seen - set(requirements(PROJECT))


def record(path: str) -> None:
    """At exit, append to `path` the distributions whose modules this process imported
    (imports, not probes: what is in sys.modules then)."""

    def write() -> None:
        tops = {name.partition(".")[0] for name, mod in list(sys.modules.items()) if mod}
        own = owners()
        dists = sorted({d for top in tops for d in own.get(top, ())})
        with open(path, "a") as f:  # one short append per process
            f.write("".join(f"{d}\n" for d in dists))

    atexit.register(write)


def from_env() -> None:
    """What `bench/as_image/sitecustomize.py` runs in every process of a run."""
    mode, _, arg = os.environ.get(ENV, "").partition(":")
    if mode == "hide":
        hide(d for d in arg.split(",") if d)
    elif mode == "record" and arg:
        record(arg)


def requirements(dist: str) -> list[str]:
    """`dist`'s unconditional requirements as installed here (no extras; markers
    evaluated for this Python, which may differ from the image's)."""
    from packaging.requirements import Requirement

    out = []
    for line in importlib.metadata.requires(dist) or ():
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        out.append(norm(req.name))
    return out


def closure(top: list[str]) -> dict[str, str]:
    """The installed distributions `top` needs, transitively, that the image lacks:
    name -> the version installed here (what the GPU run carries, pinned)."""
    out: dict[str, str] = {}
    todo = [norm(t) for t in top]
    while todo:
        name = todo.pop()
        if name in out or name in IMAGE or name == PROJECT:
            continue
        out[name] = importlib.metadata.version(name)
        todo.extend(requirements(name))
    return dict(sorted(out.items()))
