"""``edgec zoo list`` and ``edgec zoo digits``: the zoo's table, and a labelled task trained here
(:mod:`edgec.flows.zoo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgec.cli.console import CountProgress, console


def zoo_list() -> None:
    """Table of zoo models: name, params, MACs, input shape, source."""
    from edgec.flows.zoo import zoo
    from edgec.profiling.report import human_count

    table = Table()
    for col in ("name", "family", "params", "MACs", "input", "source"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for e in zoo():
        name = f"{e.name} [dim]= {e.alias_of}[/]" if e.alias_of else e.name
        table.add_row(name, e.family, human_count(e.params), human_count(e.macs),
                      "x".join(str(d) for d in e.input_shape), e.source.split(" ")[0])
    console.print(table)


def zoo_digits(
    out: Annotated[Path, typer.Argument(metavar="DIR", help="Folder for the images and the trained model.")],
    epochs: Annotated[int, typer.Option(min=1, max=1000, metavar="N", help="Training epochs.")] = 10,
    size: Annotated[int, typer.Option(min=16, max=256, metavar="S", help="Image side in pixels.")] = 64,
    arch: Annotated[str, typer.Option(metavar="NAME", help="timm architecture (random init, 10 classes).")]
    = "mobilenetv2_035",
) -> None:
    """A labelled task trained here in minutes: scikit-learn's digits as DIR/train, DIR/val (ImageFolder) and a
    trained classifier DIR/ARCH-digits.onnx (for --data and accuracy figures)."""
    from edgec.flows.zoo import check_digits_folder, digits

    check_digits_folder(out)  # before the progress bar: a refusal is one line
    with CountProgress(f"training {arch} on digits", epochs, "epochs") as bar:
        model = digits(out, arch=arch, size=size, epochs=epochs,
                       progress=lambda e, n, loss: bar(e, n, f"loss {loss:.3f}"))
    console.print(f"images: {escape(str(model.train_dir))} and {escape(str(model.val_dir))}")
    console.print(f"model: {escape(str(model.onnx_path))} (input 1x3x{size}x{size} RGB in [0, 1]); val top-1 "
                  f"{100 * model.accuracy:.2f}% after {model.epochs} epochs ({model.seconds:.0f} s)")
    console.print(f"e.g. edgec split {escape(str(model.onnx_path))} --list, then --at TENSOR --encoding int8 "
                  f"--data {escape(str(out))}")
