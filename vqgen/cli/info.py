"""`vqgen info IMAGE`: what a vqgen image says about itself."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import UsageError
from . import app


@app.command()
def info(
    image: Path = typer.Argument(..., help="A PNG written by vqgen."),
    json_output: bool = typer.Option(False, "--json", help="One JSON object (prompt, seed, settings, versions) instead of a table."),
) -> None:
    """Show the prompt, seed and settings recorded in an image."""
    from ..metadata import read_record

    if not image.is_file():
        raise UsageError(f"{str(image)!r}: no such file")
    try:
        record = read_record(image)
    except OSError:
        raise UsageError(f"{str(image)!r} is not an image vqgen can read") from None
    if record is None:
        raise UsageError(f"{str(image)!r} carries no vqgen metadata (it was not made by vqgen, or its text chunks were stripped)")
    if json_output:
        print(json.dumps(record, ensure_ascii=False, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in record.items():
        if key == "versions":
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        if value is not None:
            table.add_row(key, str(value))
    Console().print(table)
