"""``edgec targets list``: the targets' table, or their data as JSON (:func:`edgec.flows.targets.targets`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from edgec.cli.console import console


def targets_list(
    verbose: Annotated[bool, typer.Option("--json", metavar="", help="Print the full target data as JSON.")] = False,
) -> None:
    """Table of targets: name, kind, TVM target, cross compiler, verification."""
    from edgec.flows.targets import targets

    specs = targets()
    if verbose:
        console.print_json(json.dumps([s.to_dict() for s in specs]))
        return
    table = Table()
    for col in ("name", "kind", "device", "tvm target", "toolchain", "verify"):
        table.add_column(col)
    for s in specs:
        tvm_desc = ", ".join(f"{k}={v}" for k, v in s.tvm.items() if k in ("arch", "mcpu", "mtriple", "num-cores"))
        if s.host:
            tvm_desc += f"; host mcpu={s.host.get('mcpu')}"
        table.add_row(s.name, s.kind, s.description.split(":")[0], tvm_desc, s.cross_compiler or "g++", s.verify)
    console.print(table)
