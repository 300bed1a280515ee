"""Progress on stderr: bars for downloads, denoising steps and batch runs with speed and ETA, gone
when stderr is not a terminal. TerminalEvents turns the library's callbacks (vqgen.events) into them."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..events import Events

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


def make_download_progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TextColumn("eta"), TimeRemainingColumn(),
        console=stderr, transient=True, disable=quiet or not stderr.is_terminal,
        redirect_stdout=False, redirect_stderr=False,  # stdout carries only the model path
    )


@contextmanager
def status(message: str, quiet: bool):
    """A spinner while something slow without steps runs (loading a model)."""
    if quiet or not stderr.is_terminal:
        yield
    else:
        with stderr.status(message):
            yield


class TerminalEvents(Events):
    """The library's events drawn for a person at a terminal: messages and warnings as lines on
    stderr (above the bars while they are live), one bar per network run, one for the images of a
    batch run, one for a download; image paths on stdout. quiet: nothing on stderr but failures.

    Use it as a context manager around the work whose steps it should draw (the step bars live in
    one rich Progress); messages outside the context are plain lines."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress = make_progress(quiet)
        self._live = False
        self._steps = None  # the task of the current network run
        self._images = None  # the task of a batch run's images
        self._images_began = 0.0
        self._images_done = 0
        self._download = None  # (Progress, task) of a download
        self._status = None

    def __enter__(self):
        self.progress.__enter__()
        self._live = True
        return self

    def __exit__(self, *exc):
        self._live = False
        return self.progress.__exit__(*exc)

    def stop(self) -> None:
        """Take the bars off the terminal now (before a last message after an interruption)."""
        self.progress.stop()

    # -- lines --------------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        if self._live and not self.progress.disable:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.quiet:
            self._line(text)

    def warning(self, text: str) -> None:
        self.message(f"warning: {text}")

    def image_failed(self, name: str, line: int | None, error: str) -> None:
        # Shown even with --quiet: a failure is what a user has to act on.
        self._line(f"failed: {name}" + (f" (line {line})" if line is not None else "") + f": {error}")
        self._advance_images()

    def image_saved(self, path) -> None:
        print(path, flush=True)
        self._advance_images()

    # -- a spinner ----------------------------------------------------------------------------
    def task_started(self, label: str) -> None:
        if not self.quiet and stderr.is_terminal:
            self._status = stderr.status(label)
            self._status.__enter__()

    def task_finished(self) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)
            self._status = None

    # -- a download ---------------------------------------------------------------------------
    def download_started(self, label: str, total_bytes: int) -> None:
        progress = make_download_progress(self.quiet)
        progress.__enter__()
        self._download = progress, progress.add_task(label, total=total_bytes)

    def download_advanced(self, num_bytes: int) -> None:
        if self._download is not None:
            progress, task = self._download
            progress.advance(task, num_bytes)

    def download_finished(self) -> None:
        if self._download is not None:
            self._download[0].__exit__(None, None, None)
            self._download = None

    # -- denoising ----------------------------------------------------------------------------
    def steps_started(self, label: str, total: int) -> None:
        self._steps = self.progress.add_task(label, total=total, rate="")

    def step(self, done: int, total: int) -> None:
        if self._steps is None:
            return
        self.progress.update(self._steps, completed=done)
        speed = next((t.speed for t in self.progress.tasks if t.id == self._steps), None)
        self.progress.update(self._steps, rate=f"{speed:.2f} step/s" if speed else "")

    def steps_finished(self) -> None:
        if self._steps is not None:
            self.progress.remove_task(self._steps)
            self._steps = None

    # -- a batch run's images -----------------------------------------------------------------
    def images_started(self, total: int, done: int) -> None:
        self._images = self.progress.add_task("images", total=total, completed=done, rate="")
        self._images_began, self._images_done = time.monotonic(), 0

    def _advance_images(self) -> None:
        if self._images is None:
            return
        self.progress.advance(self._images)
        self._images_done += 1
        minutes = (time.monotonic() - self._images_began) / 60
        self.progress.update(self._images, rate=f"{self._images_done / minutes:.1f} img/min" if minutes > 0 else "")
