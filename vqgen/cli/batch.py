"""`vqgen batch PROMPTS OUTDIR`: every prompt of a file into one folder; resumable, batched, and
split across processes under torchrun. The work itself lives in vqgen/batch/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from . import app
from .common import check_kernels, given_settings, shared_options
from .progress import TerminalEvents, say

MAX_BATCH_SIZE = 1024  # a typo guard: far above what fits in any GPU's memory at ITHQ size


@app.command()
@shared_options
def batch(
    prompts: str = typer.Argument(..., help="Text file, one prompt per line (or JSON Lines with prompt/seed/steps/guidance/truncation/n, and image/mask/strength for edits, paths relative to the file); - for stdin."),
    outdir: Path = typer.Argument(..., help="Folder for the images and manifest.jsonl; created if missing. Re-running skips finished images."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Base seed: image j of the file gets SEED+j (a line's own seed wins). Default: the last run's in OUTDIR, else random."),
    num_images: Optional[int] = typer.Option(None, "--num-images", "-n", help="Images per prompt line (a line's own n wins; default 1)."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Images run through the network together; more is faster on a GPU and needs more memory. Changes no image."),
    **options,
) -> None:
    """Generate an image for every prompt in a file; prints each image's path as it is written."""
    from ..batch import distributed, jobs as joblib, manifest, prompts as promptlib
    from ..settings import model_recommended, resolve

    quiet, verbose = options["quiet"], options["verbose"]

    # 1. Everything that needs no model and no other process: the command line's settings over
    #    defaults.py (vqgen.settings.resolve), checked.
    given = given_settings(options, num_images=num_images)
    run = resolve(given)
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise UsageError(f"--batch-size {batch_size} is out of range; use 1..{MAX_BATCH_SIZE}")
    if seed is not None and not 0 <= seed <= promptlib.MAX_SEED:
        raise UsageError(f"--seed {seed} is out of range; use 0..{promptlib.MAX_SEED}")
    world = distributed.detect()
    if prompts == "-" and world.size > 1:
        raise UsageError("PROMPTS - (stdin) cannot be split across torchrun processes; save the prompts to a file")
    lines = promptlib.parse(promptlib.read_source(prompts), "<stdin>" if prompts == "-" else prompts,
                            None if prompts == "-" else Path(prompts).expanduser().parent)
    promptlib.check_edit_files(lines, "<stdin>" if prompts == "-" else prompts)
    from ..images import ensure_folder

    ensure_folder(outdir, "OUTDIR")
    user_quiet, quiet = quiet, quiet or not world.main  # one process talks; the others only report failures

    # 2. The model's chain length, so every line's settings are checked before any work; its
    #    recommended settings for what the command line left open. A line's own values go through
    #    the same rules (a line > the command line > the model > defaults.py).
    from .common import describe_sources, find_model

    resolved, chain = find_model(run["model"], revision=run["revision"], offline=options["offline"], quiet=quiet)
    run = resolve(given, None, model_recommended(resolved.path), chain=chain)
    base = run.settings
    for line in lines:
        for key in ("steps", "guidance", "truncation"):
            promptlib.check_line_setting(f"{prompts}:{line.line}", key, getattr(line, key), chain)
    if verbose:
        say(describe_sources(run), quiet)

    # 3. The processes agree on the base seed: rank 0 picks it, the others receive it.
    from ..device import resolve_device

    dev = resolve_device(distributed.device_for(world, run["device"]))
    check_kernels(str(dev), run["dtype"], run["exact"], run["quantize"])
    kernels = dict(dtype=run["dtype"], exact=run["exact"], quantize=run["quantize"], verbose=verbose)
    started = time.monotonic()
    group = distributed.Group(world, dev)
    try:
        seed, seed_note = _base_seed(seed, outdir, world)
        seed = group.broadcast_int(seed)
        all_jobs = joblib.expand(lines, seed, steps=base.steps, guidance=base.guidance, truncation=base.truncation,
                                 num_images=run["num_images"])
        mine = joblib.shard(all_jobs, world.rank, world.size)

        # 4. What an earlier run already made (or a refusal when OUTDIR holds other images).
        from ..batch import resume

        manifest.clean_temp_files(outdir, {j.name for j in mine}, {j.name for j in all_jobs} if world.main else None)
        todo, done = resume.plan(mine, outdir, base, chain.length)
        if seed_note:
            say(seed_note, quiet)
        if todo and done:
            say(f"resuming: {len(done)} of {len(mine)} images already in {outdir}", quiet)
        _run(world, group, resolved, dev, kernels, base, seed, mine, todo, done, len(all_jobs), outdir, batch_size,
             quiet, user_quiet, started)
    finally:
        group.close()


def _base_seed(seed: int | None, outdir: Path, world) -> tuple[int, str]:
    """(base seed, a note for the user). Without --seed: the earlier run's, so that a re-run
    resumes under the same names; else a random one. Only rank 0's choice counts."""
    from ..batch import manifest

    if seed is not None or not world.main:
        return seed or 0, ""
    earlier = manifest.last_base_seed(manifest.read(outdir / manifest.NAME))
    if earlier is not None:
        return earlier, f"base seed {earlier} (from the earlier run in {outdir}; pass --seed to choose another)"
    from ..pipeline import random_seed

    seed = random_seed()
    return seed, f"base seed {seed}"


def _run(world, group, resolved, dev, kernels, base, seed, mine, todo, done, total_all, outdir, batch_size,
         quiet, user_quiet, started) -> None:
    from ..batch.runner import Runner
    from .common import load_pipeline

    pipe = load_pipeline(resolved, dev, quiet=quiet, **kernels) if todo else None
    with TerminalEvents(quiet) as events:
        runner = Runner(pipe, outdir, base, seed, batch_size=batch_size, events=events)
        try:
            runner.record_finished(done)
            if todo:
                runner.run(todo, len(mine))
        except KeyboardInterrupt:
            events.stop()
            c = runner.counts
            who = f"process {world.rank}: " if world.size > 1 else ""
            say(f"{who}interrupted after {_elapsed(started)}: made {c.made}, skipped {c.skipped}, failed {c.failed} "
                f"of {len(mine)} images; run the same command again to finish", user_quiet)
            raise typer.Exit(130) from None
    # Also the meeting point at the end: rank 0 reports once every process has finished.
    made, skipped, failed, busy_ms = group.sum_ints([*runner.counts.as_list(), int(runner.busy_seconds * 1000)])
    if world.main:
        # Images per minute while generating (model loading excluded), all processes together:
        # their mean busy time is about the wall time of the generation phase.
        rate = f" ({made / (busy_ms / world.size / 60000):.1f} images/min)" if made and busy_ms else ""
        say(f"done in {_elapsed(started)}: made {made}, skipped {skipped}, failed {failed} of {total_all} images{rate}", quiet)
        if failed:
            say(f"{failed} image(s) failed; see the \"error\" lines in {outdir / 'manifest.jsonl'}; "
                "run the same command again to retry them", user_quiet)
    if failed:
        raise typer.Exit(1)


def _elapsed(start: float) -> str:
    seconds = int(time.monotonic() - start)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
