"""`vqgen edit IMAGE PROMPT [--mask MASK]`: text-guided inpainting, or a variation of the whole image.

The work is vqgen/editing.py and Pipeline.edit; this file reads the command line, checks every
input before the model loads (nothing is written on a mistake), and writes the images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from . import app
from .common import (
    ImageWriter, check_kernels, describe_sources, find_model, given_settings, load_pipeline, read_vqgen_record, shared_options,
)
from .progress import TerminalEvents, say

# Edit settings that only the library exposes; --from-image restores them so an edit is made again
# the same way even after the defaults change.
INTERNAL = ("start", "keep", "fill", "context", "feather")


@app.command()
@shared_options
def edit(
    image: Optional[str] = typer.Argument(None, help="The image to edit: any size and mode (PNG, JPEG, WebP, 16-bit, CMYK, ...)."),
    prompt: Optional[str] = typer.Argument(None, help="What the repainted part (or the variation) should show."),
    mask: Optional[str] = typer.Option(None, "--mask", help="What to repaint: white, or opaque in a mask with transparency. Any size and mode; resized to IMAGE. Without it: a variation of the whole image."),
    region: Optional[str] = typer.Option(None, "--region", help="X0,Y0,X1,Y1: a box of IMAGE's pixels to repaint (with --mask, both)."),
    strength: Optional[float] = typer.Option(None, "--strength", help="In (0, 1]: how far back along the chain the repainted part goes. 1 (default): from scratch; 0.3: a close variation."),
    grow: Optional[int] = typer.Option(None, "--grow", help="Whole tokens added around the mask (default 2)."),
    fit: Optional[str] = typer.Option(None, "--fit", help="How IMAGE becomes the model's size: crop (default, centre crop), pad or stretch."),
    no_paste: bool = typer.Option(False, "--no-paste", help="Write the raw decode; by default the original pixels are pasted back outside the mask (feathered edge)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Image file (.png). Default: IMAGE's name with -edit. With -n, NAME-0.png, NAME-1.png, ..."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (image i uses seed+i). Random when absent, and reported."),
    num_images: Optional[int] = typer.Option(None, "--num-images", "-n", help="How many images (default 1)."),
    from_image: Optional[str] = typer.Option(None, "--from-image", help="Make an edited image again: its prompt, seed and settings, with IMAGE (and --mask) given again and checked by their SHA-256."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files instead of picking the next free name."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object per image (path, seed, settings, edit, seconds) instead of bare paths."),
    grid: bool = typer.Option(False, "--grid", help="With -n above 1, also write NAME-grid.png, a contact sheet of the images."),
    **options,
) -> None:
    """Repaint the masked part of IMAGE following PROMPT (or, without --mask, make a variation of it);
    prints the path of each image written, one per line."""
    from ..device import resolve_device
    from ..editing import EditOptions, open_image, parse_region, read_mask
    from ..images import output_paths, prepare_folder, slugify
    from ..pipeline import random_seed
    from ..settings import DEFAULTS, EDIT_DEFAULTS, edit_record_layer, model_recommended, record_layer, resolve

    quiet, verbose = options["quiet"], options["verbose"]
    fallback = {**DEFAULTS, **EDIT_DEFAULTS}

    # 1. Settings: command line > --from-image's record > the model's vqgen.json > defaults.py.
    record, recorded_edit = None, {}
    if from_image:
        full = read_vqgen_record(from_image, "--from-image")
        if not isinstance(full.get("edit"), dict):
            raise UsageError(f"--from-image {from_image!r} was not made by vqgen edit; regenerate it with vqgen generate --from-image")
        recorded_edit = full["edit"]
        record = {**record_layer(full), **edit_record_layer(full)}
    given = given_settings(options, prompt=prompt, seed=seed, num_images=num_images, strength=strength, grow=grow,
                           fit=fit, paste=False if no_paste else None, region=parse_region(region) if region is not None else None)
    run = resolve(given, record, fallback=fallback)
    prompt, num_images = run["prompt"], run["num_images"]
    if image is None:
        raise UsageError("no IMAGE given; write vqgen edit IMAGE PROMPT --mask MASK (or --strength S for a variation)")
    if prompt is None:
        raise UsageError("no PROMPT given; write vqgen edit IMAGE PROMPT --mask MASK, or re-run an edit with --from-image")

    # 2. IMAGE and MASK read and checked now, before any model loads (and, for --from-image,
    #    matched against the hashes the edited image recorded).
    source, image_sha = open_image(image, "image")
    mask_sha = None
    if mask is not None:
        mask_image, mask_sha = open_image(mask, "mask")
        read_mask(mask_image, repr(mask), source.size)
    if from_image:
        _match(from_image, "IMAGE", image, image_sha, recorded_edit.get("image_sha256"))
        if recorded_edit.get("mask_sha256") and mask is None:
            raise UsageError(f"--from-image {from_image!r} was made with a mask; give the same --mask MASK again")
        if mask is not None:
            _match(from_image, "--mask", mask, mask_sha, recorded_edit.get("mask_sha256"))
    paths = output_paths(output or f"{slugify(Path(image).stem)}-edit.png", prompt, num_images)
    for path in paths:
        prepare_folder(path)
    dev = resolve_device(run["device"])
    check_kernels(run["device"], run["dtype"], run["exact"], run["quantize"])

    # 3. The model: its chain and recommended settings first (cheap), then the weights.
    resolved, chain = find_model(run["model"], revision=run["revision"], offline=options["offline"], quiet=quiet)
    run = resolve(given, record, model_recommended(resolved.path), fallback, chain=chain)
    settings = run.settings
    if verbose:
        say(describe_sources(run) + ", " + run.describe(tuple(EDIT_DEFAULTS), {"given": "command line", "image": "--from-image"},
                                                         {"strength": "--strength", "grow": "--grow", "fit": "--fit", "paste": "paste", "region": "--region"}), quiet)
    extra = {k: recorded_edit[k] for k in INTERNAL if recorded_edit.get(k) is not None}
    edit_options = EditOptions(strength=run["strength"], grow=run["grow"], fit=run["fit"], paste=run["paste"], **extra)
    edit_options.validate()
    pipe = load_pipeline(resolved, dev, run["dtype"], quiet=quiet, exact=run["exact"], quantize=run["quantize"], verbose=verbose)
    prepared = pipe.prepare_source(image, mask, region=run["region"], fit=edit_options.fit, grow=edit_options.grow)

    # 4. Edit (in chunks), writing each image as soon as its chunk exists.
    seed = run["seed"]
    if seed is None:
        seed = random_seed()
        say(f"seed {seed}", quiet)
    seeds = [seed + i for i in range(num_images)]
    write = ImageWriter(pipe, prompt, seeds, settings, paths, overwrite=overwrite, json_output=json_output)
    with TerminalEvents(quiet) as events:
        write.events = events
        pipe.run_edits([prepared] * num_images, [prompt] * num_images, seeds, settings, edit_options, events=events, on_images=write)

    # 5. The contact sheet.
    if grid and num_images > 1:
        write.contact_sheet()


def _match(from_image: str, what: str, path: str, sha: str, recorded: str | None) -> None:
    if recorded is None:
        raise UsageError(f"--from-image {from_image!r} was made without a mask; leave out {what}")
    if sha != recorded:
        raise UsageError(f"{what} {path!r} is not the file --from-image {from_image!r} was made from "
                         f"(SHA-256 {sha[:12]}..., recorded {recorded[:12]}...); give the same file")
