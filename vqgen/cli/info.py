"""`vqgen info IMAGE`: what a vqgen image says about itself."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from . import app


@app.command()
def info(
    image: Path = typer.Argument(..., help="A PNG written by vqgen."),
    json_output: bool = typer.Option(False, "--json", help="One JSON object (prompt, seed, settings, versions) instead of a table."),
) -> None:
    """Show the prompt, seed and settings recorded in an image."""
    from .common import read_vqgen_record

    record = read_vqgen_record(image, "image")
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
        if key == "edit" and isinstance(value, dict):
            for k, v in value.items():  # one row each: edit.image_sha256, edit.strength, ...
                if v is not None:
                    table.add_row(f"edit.{k}", ",".join(map(str, v)) if isinstance(v, list) else str(v))
            continue
        if value is not None:
            table.add_row(key, str(value))
    Console().print(table)
