"""`vqgen generate PROMPT` (also plain `vqgen PROMPT`): one prompt to one or more images."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from .. import defaults
from ..errors import UsageError
from . import app
from .common import Opt, check_kernels, find_model, load_pipeline, read_vqgen_record, recommended_for, validate_basics
from .progress import make_progress, say, step_bar

MAX_BATCH = 8  # images per network call for -n; more only costs memory, not time per image

# Settings that --from-image restores unless the command line gives them (option name -> record key).
FROM_IMAGE_KEYS = ("model", "revision", "steps", "guidance", "truncation", "schedule", "sampler", "purity_weight", "seed", "dtype")


def settings_from_image(path: str, given: dict) -> dict:
    """The options recorded in a vqgen image, overridden by those given on the command line."""
    record = read_vqgen_record(path, "--from-image")
    restored = {key: record.get(key) for key in FROM_IMAGE_KEYS if record.get(key) is not None}
    if record.get("repo_id"):
        restored["model"] = record["repo_id"]
        restored["revision"] = record.get("commit") or record.get("revision")
    # The kernels: an image made in exact or int8 mode is made again in that mode. Records from
    # before modes existed were made with the exact arithmetic.
    mode = record.get("mode", "exact")
    restored["exact"], restored["quantize"] = mode == "exact", (mode if mode in ("int8",) else None)
    restored["prompt"] = record["prompt"]
    if "exact" in given or "quantize" in given:
        # A mode chosen on the command line replaces the recorded one, and its dtype with it.
        for key in ("exact", "quantize", "dtype"):
            restored.pop(key, None)
    return {**restored, **given}


@app.command()
def generate(
    ctx: typer.Context,
    prompt: Optional[str] = typer.Argument(None, help="What to draw. Prompts over 77 CLIP tokens lose their end, as in the reference."),
    model: str = Opt.model,
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Image file (.png). Default: a name from the prompt. With -n, NAME-0.png, NAME-1.png, ..."),
    steps: Optional[int] = Opt.steps,
    guidance: float = Opt.guidance,
    truncation: float = Opt.truncation,
    schedule: str = Opt.schedule,
    sampler: str = Opt.sampler,
    purity_weight: float = Opt.purity_weight,
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (image i uses seed+i). Random when absent, and reported."),
    num_images: int = typer.Option(defaults.NUM_IMAGES, "--num-images", "-n", help="How many images."),
    revision: Optional[str] = Opt.revision,
    offline: bool = Opt.offline,
    device: str = Opt.device,
    dtype: Optional[str] = Opt.dtype,
    exact: bool = Opt.exact,
    quantize: Optional[str] = Opt.quantize,
    from_image: Optional[str] = typer.Option(None, "--from-image", help="Regenerate a vqgen image: its settings, overridden by any option given here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files instead of picking the next free name."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object per image (path, seed, settings, seconds) instead of bare paths."),
    grid: bool = typer.Option(False, "--grid", help="With -n above 1, also write NAME-grid.png, a contact sheet of the images."),
    verbose: bool = Opt.verbose,
    quiet: bool = Opt.quiet,
) -> None:
    """Generate images from a prompt; prints the path of each image written, one per line."""
    from ..device import resolve_device
    from ..images import contact_sheet, free_path, output_paths, prepare_folder, save_atomic
    from ..metadata import image_record, png_info
    from ..pipeline import Settings, random_seed

    # 1. Settings: the command line, over those recorded in --from-image, over the model's
    #    recommendations (step 3), over defaults.py.
    restored: dict = {}
    if from_image:
        given = {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k).name == "COMMANDLINE"}
        restored = settings_from_image(from_image, given)
        prompt, model, revision = restored["prompt"], restored.get("model", model), restored.get("revision", revision)
        steps, guidance, truncation = restored.get("steps", steps), restored.get("guidance", guidance), restored.get("truncation", truncation)
        schedule, sampler = restored.get("schedule", schedule), restored.get("sampler", sampler)
        purity_weight, seed, dtype = restored.get("purity_weight", purity_weight), restored.get("seed", seed), restored.get("dtype", dtype)
        exact, quantize = restored.get("exact", exact), restored.get("quantize", quantize)
    if prompt is None:
        raise UsageError("no prompt given; write one (vqgen \"a red bus\") or regenerate an image with --from-image IMAGE")

    # 2. Everything that can be checked without the model.
    validate_basics(steps, guidance, truncation, num_images)
    paths = output_paths(output, prompt, num_images)
    for path in paths:
        prepare_folder(path)
    dev = resolve_device(device)
    check_kernels(device, dtype, exact, quantize)

    # 3. The model: its chain length first (cheap), then the weights.
    resolved, chain = find_model(model, revision=revision, offline=offline, quiet=quiet)
    chosen = dict(steps=steps, guidance=guidance, truncation=truncation, schedule=schedule,
                  sampler=sampler, purity_weight=purity_weight)
    settings = Settings(**{**chosen, **recommended_for(ctx, resolved, keep=set(restored))})
    settings.validate(chain)
    pipe = load_pipeline(resolved, dev, dtype, quiet=quiet, exact=exact, quantize=quantize, verbose=verbose)

    # 4. Generate in chunks, writing each image as soon as it exists.
    if seed is None:
        seed = random_seed()
        say(f"seed {seed}", quiet)
    seeds = [seed + i for i in range(num_images)]
    written = []
    with make_progress(quiet) as progress:
        for start in range(0, num_images, MAX_BATCH):
            chunk = range(start, min(start + MAX_BATCH, num_images))
            label = "denoising" if num_images == 1 else f"images {chunk.start + 1}-{chunk.stop} of {num_images}"
            began = time.perf_counter()
            with step_bar(progress, label, settings.steps or pipe.num_timesteps) as on_step:
                result = pipe.generate([prompt] * len(chunk), [seeds[i] for i in chunk], settings, on_step=on_step)
            seconds = (time.perf_counter() - began) / len(chunk)
            for warning in dict.fromkeys(result.warnings):
                say(f"warning: {warning}", quiet)
            for i, image in zip(chunk, result.images):
                record = image_record(pipe, prompt, seeds[i], settings)
                path = paths[i] if overwrite else free_path(paths[i])
                if path != paths[i]:
                    say(f"{paths[i]} exists; writing {path} (use --overwrite to replace)", quiet)
                save_atomic(image, path, png_info(record))
                written.append(image)
                if json_output:
                    print(json.dumps({"path": str(path), "seconds": round(seconds, 3), **record}, ensure_ascii=False), flush=True)
                else:
                    print(path, flush=True)

    # 5. The contact sheet.
    if grid and num_images > 1:
        sheet_path = paths[0].with_name(f"{paths[0].stem.rsplit('-', 1)[0]}-grid{paths[0].suffix}")
        sheet_path = sheet_path if overwrite else free_path(sheet_path)
        save_atomic(contact_sheet(written), sheet_path)
        print(json.dumps({"path": str(sheet_path), "grid": True}) if json_output else sheet_path, flush=True)
