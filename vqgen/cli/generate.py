"""`vqgen generate PROMPT` (also plain `vqgen PROMPT`): one prompt to one or more images."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import UsageError
from . import app
from .common import (
    ImageWriter, check_kernels, describe_sources, find_model, given_settings, load_pipeline, read_vqgen_record, shared_options,
)
from .progress import TerminalEvents, say


@app.command()
@shared_options
def generate(
    prompt: Optional[str] = typer.Argument(None, help="What to draw. Prompts over 77 CLIP tokens lose their end, as in the reference."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Image file (.png). Default: a name from the prompt. With -n, NAME-0.png, NAME-1.png, ..."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (image i uses seed+i). Random when absent, and reported."),
    num_images: Optional[int] = typer.Option(None, "--num-images", "-n", help="How many images (default 1)."),
    from_image: Optional[str] = typer.Option(None, "--from-image", help="Regenerate a vqgen image: its settings, overridden by any option given here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files instead of picking the next free name."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object per image (path, seed, settings, seconds) instead of bare paths."),
    grid: bool = typer.Option(False, "--grid", help="With -n above 1, also write NAME-grid.png, a contact sheet of the images."),
    **options,
) -> None:
    """Generate images from a prompt; prints the path of each image written, one per line."""
    from ..device import resolve_device
    from ..images import output_paths, prepare_folder
    from ..pipeline import random_seed
    from ..settings import model_recommended, record_layer, resolve

    quiet, verbose = options["quiet"], options["verbose"]

    # 1. Settings: the command line, over those recorded in --from-image, over the model's
    #    recommendations (step 3), over defaults.py (vqgen.settings.resolve), checked here for
    #    everything that needs no model.
    record = record_layer(read_vqgen_record(from_image, "--from-image")) if from_image else None
    given = given_settings(options, prompt=prompt, seed=seed, num_images=num_images)
    run = resolve(given, record)
    prompt, num_images = run["prompt"], run["num_images"]
    if prompt is None:
        raise UsageError("no prompt given; write one (vqgen \"a red bus\") or regenerate an image with --from-image IMAGE")

    # 2. Everything else that can be checked without the model.
    paths = output_paths(output, prompt, num_images)
    for path in paths:
        prepare_folder(path)
    dev = resolve_device(run["device"])
    check_kernels(run["device"], run["dtype"], run["exact"], run["quantize"])

    # 3. The model: its chain length and recommended settings first (cheap), then the weights.
    resolved, chain = find_model(run["model"], revision=run["revision"], offline=options["offline"], quiet=quiet)
    run = resolve(given, record, model_recommended(resolved.path), chain=chain)
    settings = run.settings
    if verbose:
        say(describe_sources(run), quiet)
    pipe = load_pipeline(resolved, dev, run["dtype"], quiet=quiet, exact=run["exact"], quantize=run["quantize"], verbose=verbose)

    # 4. Generate (the pipeline runs chunks of defaults.CHUNK_SIZE), writing each image as soon as
    #    its chunk exists.
    seed = run["seed"]
    if seed is None:
        seed = random_seed()
        say(f"seed {seed}", quiet)
    seeds = [seed + i for i in range(num_images)]
    write = ImageWriter(pipe, prompt, seeds, settings, paths, overwrite=overwrite, json_output=json_output)
    with TerminalEvents(quiet) as events:
        write.events = events
        pipe.run([prompt] * num_images, seeds, settings, events=events, on_images=write)

    # 5. The contact sheet.
    if grid and num_images > 1:
        write.contact_sheet()
