"""Which accelerators this host has, named as `sdaas/accelerator_names.py` says
(`cpu-<cpu model>`, `cuda-<device name>` per CUDA device)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from sdaas.accelerator_names import accelerator_name
from sdaas.errors import InvalidInputError


@dataclass(frozen=True)
class Accelerator:
    """A device to run on (`device`, as torch names it) and its profile name. Identical
    devices share a `name` (and so a profile) but each is its own place to run: `id`."""

    device: str
    name: str
    instance: str = ""  # a unique id where `device` is not one (two CPU workers, tests)

    @property
    def id(self) -> str:
        return self.instance or self.device


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_accelerator() -> Accelerator:
    return Accelerator("cpu", accelerator_name("cpu", _cpu_model()))


def cuda_accelerators() -> list[Accelerator]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [
        Accelerator(f"cuda:{i}", accelerator_name("cuda", torch.cuda.get_device_name(i)))
        for i in range(torch.cuda.device_count())
    ]


def local_accelerators() -> list[Accelerator]:
    """Every CUDA device when there are any, else the CPU."""
    return cuda_accelerators() or [cpu_accelerator()]


def resolve_devices(devices: list[str] | None) -> list[Accelerator]:
    """Accelerators for device names given by the user ('cpu', 'cpu:1', 'cuda', 'cuda:1');
    none = auto. `cpu:N` names a CPU device instance: serving runs one device engine per
    instance (on a CPU-only host, `cpu:0,cpu:1` makes two places to run)."""
    if not devices:
        return local_accelerators()
    cuda = cuda_accelerators()
    out: list[Accelerator] = []
    for d in devices:
        if d == "cpu":
            out.append(cpu_accelerator())
        elif d.startswith("cpu:") and d[4:].isdigit() and len(d) <= 7:
            # several CPU device engines on one host, each its own place to run
            out.append(Accelerator("cpu", cpu_accelerator().name, d))
        elif d == "cuda":
            if not cuda:
                raise InvalidInputError("--devices: 'cuda': no CUDA device on this host")
            out.extend(cuda)
        elif d.startswith("cuda:"):
            match = [a for a in cuda if a.device == d]
            if not match:
                known = ", ".join(a.device for a in cuda) or "none"
                raise InvalidInputError(f"--devices: {d!r}: no such device (CUDA devices: {known})")
            out.extend(match)
        else:
            raise InvalidInputError(f"--devices: {d!r}: use cpu, cpu:N, cuda or cuda:N")
    return list(dict.fromkeys(out))
