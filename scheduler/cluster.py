"""A cluster: how many accelerators of each kind, parsed from `8xA100+8xT4`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from scheduler.catalog import Catalog
from sdaas.errors import InvalidInputError

_PART = re.compile(r"^\s*(\d+)\s*[xX*]\s*([A-Za-z0-9_.-]+)\s*$")


@dataclass(frozen=True)
class Cluster:
    """`counts` maps accelerator kind -> number of instances, in spec order."""

    counts: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, spec: str) -> Cluster:
        """`8xA100+8xT4` (or `1xA100`). Errors name the part and say the format."""
        if not isinstance(spec, str) or not spec.strip():
            raise InvalidInputError(f"cluster: {spec!r}: empty; write it like 8xA100+8xT4")
        counts: dict[str, int] = {}
        for part in spec.split("+"):
            m = _PART.match(part)
            if not m:
                raise InvalidInputError(
                    f"cluster: {part.strip()!r} in {spec!r}: not COUNTxKIND; "
                    "write it like 8xA100+8xT4"
                )
            n, kind = int(m.group(1)), m.group(2)
            if n <= 0:
                raise InvalidInputError(f"cluster: {part.strip()!r}: count must be >= 1")
            counts[kind] = counts.get(kind, 0) + n
        return cls(tuple(counts.items()))

    @property
    def size(self) -> int:
        return sum(n for _, n in self.counts)

    @property
    def kinds(self) -> list[str]:
        return [k for k, _ in self.counts]

    def __str__(self) -> str:
        return "+".join(f"{n}x{k}" for k, n in self.counts)

    def check(self, catalog: Catalog) -> None:
        """Every kind must have a profile and run at least one model."""
        for kind, _ in self.counts:
            k = catalog.kind_index(kind)
            if not any(catalog.can_run(m, k) for m in range(len(catalog.models))):
                raise InvalidInputError(
                    f"cluster: accelerator {kind!r} has a profile for no model; "
                    "profile a model on it"
                )
