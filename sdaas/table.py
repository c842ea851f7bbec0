"""Plain-text tables for terminal output (no dependency, aligned columns)."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def registry_table(rows, *, accelerators: bool = True) -> str:
    """The registry listing (`sdaas models list`, the demo): one line per registered card."""
    headers = ["model", "version", "styles", "scheduler", "steps", "resolutions"]
    if accelerators:
        headers.append("accelerators")
    lines = []
    for r in rows:
        c = r.card
        line = [
            c.name,
            c.version,
            ",".join(c.styles),
            c.scheduler,
            f"{c.steps.min}-{c.steps.max}",
            ",".join(c.resolutions),
        ]
        if accelerators:
            line.append(",".join(c.accelerators))
        lines.append(line)
    return format_table(headers, lines)
