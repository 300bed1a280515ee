"""Making the images of one process's share of the jobs: resume check, batched generation,
atomic saves, manifest lines, and failures recorded without stopping the run. What happens is
reported to an Events object (vqgen.events): images saved or failed, steps, warnings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import VqgenError
from ..events import NO_EVENTS, Events
from . import manifest
from .jobs import Job, batches


@dataclass
class Counts:
    made: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # "file: error" for this process

    def as_list(self) -> list[int]:
        return [self.made, self.skipped, self.failed]


class Runner:
    def __init__(self, pipe, outdir: Path, base_settings, base_seed: int, *, batch_size: int,
                 events: Events | None = None):
        self.pipe, self.outdir, self.base = pipe, outdir, base_settings
        self.base_seed, self.batch_size = base_seed, batch_size
        self.events = events or NO_EVENTS
        self.manifest_path = outdir / manifest.NAME
        self.counts = Counts()
        self._warned: set[str] = set()
        self._sources: dict = {}  # (image, mask) -> editing.EditSource, each read and encoded once
        self._started = time.monotonic()
        self.busy_seconds = 0.0  # time spent in run(), for the images-per-minute figure

    def record_finished(self, done: list) -> None:
        """Count images found finished (resume.plan) as skipped, and give them the manifest line
        they lack when a kill came between the rename and the append."""
        listed = manifest.written_files(manifest.read(self.manifest_path))
        for job, record in done:
            self.counts.skipped += 1
            if job.name not in listed:
                manifest.append(self.manifest_path, manifest.image_line(job, record, self.base_seed))

    # -- generation -----------------------------------------------------------------------------
    def run(self, jobs: list[Job], total: int) -> Counts:
        """Make `jobs`; `total` (this process's whole share, finished ones included) is reported
        to events.images_started."""
        self.events.images_started(total, self.counts.skipped)
        self._started = time.monotonic()
        try:
            self._run_all(jobs)
        finally:
            self.busy_seconds += time.monotonic() - self._started
        return self.counts

    def _run_all(self, jobs: list[Job]) -> None:
        for batch in batches(jobs, self.batch_size):
            numbers = [str(j.index + 1) for j in batch]  # not always consecutive: shares, groups
            label = f"  image {numbers[0]}" if len(batch) == 1 else "  images " + ",".join(numbers[:4]) + (",..." if len(numbers) > 4 else "")
            if batch[0].image is not None:
                self._run_edits(batch, label)  # the pipeline reports each run's steps (edits start part-way)
                continue
            self.events.steps_started(label, batch[0].steps or self.pipe.num_timesteps)
            try:
                self._run_batch(batch)
            finally:
                self.events.steps_finished()

    def _run_batch(self, batch: list[Job]) -> None:
        settings = batch[0].settings(self.base)
        try:
            result = self.pipe.generate([j.prompt for j in batch], [j.seed for j in batch], settings, on_step=self.events.step)
        except Exception as error:  # noqa: BLE001 - any failure of one batch must not end the run
            self._free_memory()
            if len(batch) > 1:
                # Maybe only the batch was too big, or one prompt is the problem: since batching
                # changes no image, one at a time gives the same images for those that work.
                self.events.warning(f"a batch of {len(batch)} failed ({_describe(error)}); retrying its images one at a time")
                for job in batch:
                    self._run_batch([job])
            else:
                self._fail(batch[0], error)
            return
        for warning in result.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                self.events.warning(warning)
        for job, image in zip(batch, result.images):
            self._save(job, image, settings)

    def _run_edits(self, batch: list[Job], label: str) -> None:
        """Edits (lines with "image"): the same retry and failure rules as generations."""
        from ..editing import EditOptions

        settings = batch[0].settings(self.base)
        sources, ready = [], []
        for job in batch:
            key = (job.image, job.mask)
            try:
                if key not in self._sources:
                    self._sources[key] = self.pipe.prepare_source(job.image, job.mask)
            except Exception as error:  # noqa: BLE001 - one bad source must not end the run
                self._fail(job, error)
                continue
            sources.append(self._sources[key])
            ready.append(job)
        if not ready:
            return
        try:
            result = self.pipe.edit_sources(sources, [j.prompt for j in ready], [j.seed for j in ready], settings,
                                            EditOptions(strength=ready[0].strength), on_step=self.events.step,
                                            events=self.events, label=label)
        except Exception as error:  # noqa: BLE001
            self._free_memory()
            if len(ready) > 1:
                self.events.warning(f"a batch of {len(ready)} failed ({_describe(error)}); retrying its images one at a time")
                for job in ready:
                    self._run_edits([job], label)
            else:
                self._fail(ready[0], error)
            return
        for warning in result.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                self.events.warning(warning)
        for job, image, info in zip(ready, result.images, result.edits):
            self._save(job, image, settings, info)

    def _save(self, job: Job, image, settings, edit=None) -> None:
        from ..images import save_atomic
        from ..metadata import image_record, png_info

        record = image_record(self.pipe, job.prompt, job.seed, settings, edit=edit)
        path = self.outdir / job.name
        try:
            save_atomic(image, path, pnginfo=png_info(record))
        except OSError as error:
            self._fail(job, error)
            return
        manifest.append(self.manifest_path, manifest.image_line(job, record, self.base_seed))
        self.counts.made += 1
        self.events.image_saved(path)

    def _fail(self, job: Job, error: BaseException) -> None:
        message = _describe(error)
        self.counts.failed += 1
        self.counts.failures.append(f"{job.name}: {message}")
        manifest.append(self.manifest_path, manifest.error_line(job, job.steps or self.pipe.num_timesteps, self.base_seed, message))
        self.events.image_failed(job.name, job.line, message)

    def _free_memory(self) -> None:
        if getattr(self.pipe.device, "type", "cpu") == "cuda":
            import torch

            torch.cuda.empty_cache()


def _describe(error: BaseException) -> str:
    """One line: the kind of error and its first line (CUDA messages run to many lines)."""
    if isinstance(error, VqgenError):
        return str(error)
    text = str(error).strip().splitlines()
    kind = type(error).__name__
    return f"{kind}: {text[0]}" if text else kind
