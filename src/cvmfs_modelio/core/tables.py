"""Plain-text tables for people: what commands and benchmarks print."""

from __future__ import annotations


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Right-aligned columns (the first left-aligned), one header line and a rule."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])
