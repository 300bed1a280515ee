"""Progress on stderr: a bar per denoising step with speed and ETA, gone when stderr is not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

stderr = Console(stderr=True, highlight=False)


def say(message: str, quiet: bool = False) -> None:
    """A message for the person at the terminal (stderr), never mixed into stdout's paths."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def make_progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=quiet or not stderr.is_terminal,
        # Paths printed to stdout must stay on stdout, even while the bar is live on a terminal.
        redirect_stdout=False,
        redirect_stderr=False,
    )


@contextmanager
def step_bar(progress: Progress, description: str, total: int):
    """Yields on_step(done, total) for Pipeline.generate, updating one bar."""
    task = progress.add_task(description, total=total, rate="")

    def on_step(done: int, _total: int) -> None:
        progress.update(task, completed=done)
        speed = next((t.speed for t in progress.tasks if t.id == task), None)
        progress.update(task, rate=f"{speed:.2f} step/s" if speed else "")

    try:
        yield on_step
    finally:
        progress.remove_task(task)


@contextmanager
def status(message: str, quiet: bool):
    """A spinner while something slow without steps runs (loading a model)."""
    if quiet or not stderr.is_terminal:
        yield
    else:
        with stderr.status(message):
            yield
