"""What a long call reports while it runs: downloads, slow stages, denoising steps, batch images.

vqgen's library code never prints and never draws a bar: it calls these methods on the Events
object it was given, and the default one does nothing. A program that wants progress subclasses
Events and overrides what it cares about:

    class Log(vqgen.Events):
        def step(self, done, total):
            print(f"step {done}/{total}")

    pipe("a red bus", num_images=16, events=Log())

The `vqgen` command's implementation draws rich bars and lines on stderr (cli/progress.py).
Nothing here imports anything: the core can take an Events without loading a UI library.
"""

from __future__ import annotations

from pathlib import Path


class Events:
    """Every method is a no-op; override any of them. Calls come from the thread that runs the work."""

    # -- messages -------------------------------------------------------------------------------
    def message(self, text: str) -> None:
        """A note for the person waiting: what is being downloaded, a random seed that was drawn,
        a batch run that resumes."""

    def warning(self, text: str) -> None:
        """Something the caller may want to act on (a prompt cut at 77 tokens, a retried batch)."""

    # -- stages without steps (converting weights) ----------------------------------------------
    def task_started(self, label: str) -> None:
        """A slow stage without a step count begins (a spinner's moment)."""

    def task_finished(self) -> None:
        """The stage begun by the last task_started is over (also when it failed)."""

    # -- downloads ------------------------------------------------------------------------------
    def download_started(self, label: str, total_bytes: int) -> None:
        """A download of total_bytes begins (all the files of one model together)."""

    def download_advanced(self, num_bytes: int) -> None:
        """num_bytes more arrived; negative when a server ignored a resume and a file restarts."""

    def download_finished(self) -> None:
        """The download begun by download_started is over (also when it failed)."""

    # -- denoising ------------------------------------------------------------------------------
    def steps_started(self, label: str, total: int) -> None:
        """One network run of `total` denoising steps begins; label says which images it makes
        ("denoising", "images 9-16 of 64")."""

    def step(self, done: int, total: int) -> None:
        """`done` of the run's `total` steps are finished."""

    def steps_finished(self) -> None:
        """The run begun by steps_started is over (also when it failed)."""

    # -- batch runs (vqgen.batch.runner) ------------------------------------------------------------
    def images_started(self, total: int, done: int) -> None:
        """A batch run makes `total` images, of which `done` were found finished already."""

    def image_saved(self, path: Path) -> None:
        """One image is written (whole: it appears under its name only once complete)."""

    def image_failed(self, name: str, line: int | None, error: str) -> None:
        """One image could not be made (`error`, one line) and the run goes on; `line` is the
        prompt file's line it comes from."""


NO_EVENTS = Events()
