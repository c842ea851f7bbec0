"""Accelerator names: one scheme for profiles, cards, the catalog and serving.

A profile's accelerator name says what hardware ran it and through which backend:
`<backend>-<device name>`, e.g. `cpu-AMD EPYC 7B13`, `cuda-NVIDIA H100 80GB HBM3`.
Published figures are named the same way from the device name their source gives
(`cuda-NVIDIA A100-SXM4-80GB`); where a source measured a stack whose numbers do not
compare with the others' (DiffServe: ONNX Runtime), the source follows in parentheses
(`cuda-NVIDIA A100 (DiffServe)`). A card's pattern `cuda` so means any CUDA GPU, measured
here or published.

Identical devices share a name (and so a profile); each is still its own place to run,
named by its torch device (`cuda:3`).

The *kind* is what a cluster spec, a price list or a memory table needs:
`kind_of("cuda-NVIDIA A100-SXM4-80GB") == "A100"`, `kind_of("cpu-AMD EPYC 7B13") == "cpu"`.
"""

from __future__ import annotations

import re

BACKENDS = ("cpu", "cuda")


def accelerator_name(backend: str, device_name: str) -> str:
    """`<backend>-<device name>`, the device name with (R)/(TM) marks and runs of blanks
    removed. A name already in the scheme is returned as it is."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")
    clean = re.sub(r"\s+", " ", re.sub(r"\((R|TM|tm|r)\)", "", device_name)).strip()
    if clean.startswith(f"{backend}-"):
        return clean
    return f"{backend}-{clean or 'unknown'}"


def backend_of(name: str) -> str:
    """'cpu' or 'cuda'; '' for a name outside the scheme."""
    head = name.split("-", 1)[0]
    return head if head in BACKENDS else ""


def kind_of(name: str) -> str:
    """The short kind: 'cpu' for a CPU; for a GPU the first word of its device name that
    holds a digit, up to any '-' ('A100', 'T4', 'H100', 'A6000'); the device name itself
    when no word holds one."""
    backend = backend_of(name)
    if backend == "cpu":
        return "cpu"
    device = name.split("-", 1)[1] if backend else name
    device = re.sub(r"\(.*?\)", "", device)
    for word in device.split():
        if any(c.isdigit() for c in word):
            return word.split("-")[0]
    return device.strip()
