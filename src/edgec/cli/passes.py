"""``edgec passes list``: every pass, its options and its equivalence (:func:`edgec.flows.passes.passes`)."""

from __future__ import annotations

from rich.table import Table

from edgec.cli.console import console


def passes_list() -> None:
    """Describe every pass: what it matches, when it refuses, its options, its equivalence, its source."""
    from edgec.flows.passes import passes

    table = Table(show_lines=True)
    for col in ("pass", "matches", "refuses unless", "options", "equivalence", "source"):
        table.add_column(col, overflow="fold")
    described, default = passes()
    for p in described:
        table.add_row(p.name, p.matches, p.preconditions, "\n".join(p.options) or "-", p.equivalence, p.source)
    console.print(table)
    console.print(f"default pipeline: {', '.join(default)} (repeated to a fixed point)")
    console.print("with options: --passes 'default,NAME(key=value,...)', or a pipeline file (.toml/.json)")
