"""`vqgen generate PROMPT` (also plain `vqgen PROMPT`): one prompt to one or more images."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from .. import defaults
from ..errors import UsageError
from . import app
from .progress import make_progress, say, status, step_bar

MAX_BATCH = 8  # images per network call for -n; more only costs memory, not time per image


def validate_basics(steps, guidance, truncation, num_images) -> None:
    """Checks that need no model, done before the (slow) model load."""
    if steps is not None and steps < 1:
        raise UsageError(f"--steps {steps} is out of range; use at least 1 (the model's chain length at most)")
    if not 0 < truncation <= 1:
        raise UsageError(f"--truncation {truncation} is out of range; use a value in (0, 1], e.g. 0.86 or 1.0")
    if guidance < 0:
        raise UsageError(f"--guidance {guidance} is negative; use 0 or more (1 turns guidance off)")
    if num_images < 1:
        raise UsageError(f"-n {num_images}: the number of images must be at least 1")


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="What to draw. Prompts over 77 CLIP tokens lose their end, as in the reference."),
    model: str = typer.Option(defaults.MODEL, "--model", "-m", help="Local model folder or Hub repo id."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Image file (.png). Default: a name from the prompt. With -n, NAME-0.png, NAME-1.png, ..."),
    steps: Optional[int] = typer.Option(defaults.STEPS, "--steps", help="Denoising steps, 1..T (default: T, the model's whole chain: 100 for ITHQ)."),
    guidance: float = typer.Option(defaults.GUIDANCE, "--guidance", help="Classifier-free guidance scale; 1 turns guidance off (half the work per step)."),
    truncation: float = typer.Option(defaults.TRUNCATION, "--truncation", help="Keep the most likely codes up to this cumulative probability, in (0, 1]."),
    schedule: str = typer.Option("strided", "--schedule", help="strided: S steps spread over the whole chain; diffusers: the reference's last S steps."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub branch, tag or commit of --model."),
    offline: bool = typer.Option(False, "--offline", help="Use only the local cache; never touch the network (also HF_HUB_OFFLINE=1)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (image i uses seed+i). Random when absent, and reported."),
    num_images: int = typer.Option(defaults.NUM_IMAGES, "--num-images", "-n", help="How many images."),
    device: str = typer.Option(defaults.DEVICE, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: Optional[str] = typer.Option(defaults.DTYPE, "--dtype", help="float32, float16 or bfloat16 (default: float32 on CPU, float16 on GPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or messages on stderr; stdout still lists the images."),
) -> None:
    """Generate images from a prompt; prints the path of each image written, one per line."""
    from ..images import output_paths, prepare_folder, save_atomic
    from ..pipeline import Settings, random_seed

    # 1. Everything that can be checked without the model.
    validate_basics(steps, guidance, truncation, num_images)
    settings = Settings(steps=steps, guidance=guidance, truncation=truncation, schedule=schedule)
    paths = output_paths(output, prompt, num_images)
    for path in paths:
        prepare_folder(path)
    if seed is None:
        seed = random_seed()
        say(f"seed {seed}", quiet)

    # 2. The model.
    from ..device import resolve_device, resolve_dtype
    from ..hub import resolve_model
    from ..loader import check_model_folder, read_schedule_config
    from ..pipeline import Pipeline

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    resolved = resolve_model(model, revision=revision, offline=offline or None, quiet=quiet)
    check_model_folder(resolved.path)
    settings.validate(read_schedule_config(resolved.path).num_timesteps)
    with status(f"loading {model}", quiet):
        pipe = Pipeline.from_folder(resolved.path, device=str(dev), dtype=dt, resolved=resolved)

    # 3. Generate in chunks, writing each image as soon as it exists.
    seeds = [seed + i for i in range(num_images)]
    with make_progress(quiet) as progress:
        for start in range(0, num_images, MAX_BATCH):
            chunk = range(start, min(start + MAX_BATCH, num_images))
            label = "denoising" if num_images == 1 else f"images {chunk.start + 1}-{chunk.stop} of {num_images}"
            with step_bar(progress, label, settings.steps or pipe.num_timesteps) as on_step:
                result = pipe.generate([prompt] * len(chunk), [seeds[i] for i in chunk], settings, on_step=on_step)
            for warning in dict.fromkeys(result.warnings):
                say(f"warning: {warning}", quiet)
            for i, image in zip(chunk, result.images):
                save_atomic(image, paths[i])
                print(paths[i], flush=True)
