"""What the generating commands share: their options (defined once), the flag behind each setting
for messages, finding the model, then loading it.

Finding and loading are split so that a command can check its settings against the model's chain
length (read from two small config files) before paying for the slow load of the weights.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from typing import Optional

import typer

from ..errors import SettingError, UsageError, VqgenError
from .progress import TerminalEvents, say, status

# The flag (or argument) of each library setting, for messages: the library names the setting
# ("steps 0 is out of range"), the command line names the flag ("--steps 0 is out of range").
FLAGS = {
    "model": "--model", "revision": "--revision", "steps": "--steps", "guidance": "--guidance",
    "truncation": "--truncation", "schedule": "--schedule", "sampler": "--sampler", "purity_weight": "--purity-weight",
    "seed": "--seed", "num_images": "-n", "device": "--device", "dtype": "--dtype", "quantize": "--quantize",
    "precision": "--precision", "dry_run": "--dry-run", "batch_size": "--batch-size", "prompt": "PROMPT",
    "strength": "--strength", "grow": "--grow", "fit": "--fit", "region": "--region", "image": "IMAGE", "mask": "--mask",
}


def flag_message(error: VqgenError) -> str:
    """The error's line in the command line's words: a setting named by its flag."""
    if isinstance(error, SettingError):
        return error.phrased(FLAGS.get(error.setting, error.setting))
    return str(error)


# The generation options that `generate` and `batch` share, defined once (names, flags, help).
# Settings default to None: "not given", so that vqgen.settings.resolve can tell a value typed on
# the command line from a default, and let --from-image and the model's recommendations fill in.
SHARED_OPTIONS = [
    ("model", Optional[str], typer.Option(None, "--model", "-m", help="Local model folder, bundled model name (shapes) or Hub repo id (default: microsoft/vq-diffusion-ithq).")),
    ("steps", Optional[int], typer.Option(None, "--steps", help="Denoising steps, 1..T (default: the model's recommendation, else T, its whole chain: 100 for ITHQ; less if its transformer knows fewer timesteps).")),
    ("guidance", Optional[float], typer.Option(None, "--guidance", help="Classifier-free guidance scale; 1 turns guidance off (half the work per step). Default: the model's recommendation, else 5.")),
    ("truncation", Optional[float], typer.Option(None, "--truncation", help="Keep the most likely codes up to this cumulative probability, in (0, 1]. Default: the model's recommendation, else 1.")),
    ("schedule", Optional[str], typer.Option(None, "--schedule", help="strided (default): S steps spread over the whole chain; diffusers: the reference's last S steps.")),
    ("sampler", Optional[str], typer.Option(None, "--sampler", help="posterior (default): the plain posterior; purity: the purity prior of Improved VQ-Diffusion.")),
    ("purity_weight", Optional[float], typer.Option(None, "--purity-weight", help="How much purity sharpens new tokens (purity sampler; default 1).")),
    ("revision", Optional[str], typer.Option(None, "--revision", help="Hub branch, tag or commit of --model.")),
    ("offline", bool, typer.Option(False, "--offline", help="Use only the local cache; never touch the network (also HF_HUB_OFFLINE=1).")),
    ("device", Optional[str], typer.Option(None, "--device", help="auto (default), cpu, cuda, cuda:N or mps.")),
    ("dtype", Optional[str], typer.Option(None, "--dtype", help="The transformer's dtype: float32, float16 or bfloat16 (default: bfloat16 on CPUs with bf16 units, else float32; float16 on GPUs).")),
    ("exact", Optional[bool], typer.Option(None, "--exact", help="The reference's arithmetic: the same image as diffusers, bit for bit (slower on most CPUs).")),
    ("quantize", Optional[str], typer.Option(None, "--quantize", help="int8: int8 weights and activations in the transformer's Linear layers (CPU; fastest, approximate).")),
    ("verbose", bool, typer.Option(False, "--verbose", "-v", help="Also say which kernels run (dtype, GEMM path, quantization, CPU flags) and where each setting comes from.")),
    ("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress or messages on stderr; stdout still lists the images written.")),
]
# The shared options that are settings (vqgen.settings.resolve layers); the rest steer the command.
SETTING_OPTIONS = ("model", "steps", "guidance", "truncation", "schedule", "sampler", "purity_weight", "revision",
                   "device", "dtype", "exact", "quantize")


def shared_options(command):
    """Give `command` the SHARED_OPTIONS: typer sees them in its signature (after the command's
    own parameters), and the command receives them in its **options."""
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
              for name, kind, option in SHARED_OPTIONS]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        return command(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *shared])
    return wrapper


def given_settings(options: dict, **more) -> dict:
    """The command line's layer for vqgen.settings.resolve: the settings typed on it (None: not given)."""
    return {**{name: options[name] for name in SETTING_OPTIONS}, **more}


def find_model(model: str, *, revision: str | None, offline: bool, quiet: bool):
    """(ResolvedModel, the model's usable Chain), or a one-line error about the folder/repo."""
    from ..hub import resolve_model
    from ..loader import check_model_folder, read_chain

    resolved = resolve_model(model, revision=revision, offline=offline or None, events=TerminalEvents(quiet))
    check_model_folder(resolved.path)
    return resolved, read_chain(resolved.path)


def load_pipeline(resolved, device, dtype, *, quiet: bool, exact: bool = False, quantize: str | None = None,
                  verbose: bool = False):
    """The Pipeline on a resolved torch device (dtype None: the device's choice), with a spinner
    while it loads; then what runs (--verbose) and any warning about the setup."""
    from ..pipeline import Pipeline

    with status(f"loading {resolved.name}", quiet):
        pipe = Pipeline.from_folder(resolved.path, device=str(device), dtype=dtype, resolved=resolved,
                                    exact=exact, quantize=quantize)
    if verbose:
        say(f"kernels: {pipe.plan.describe()}", quiet)
        converted = pipe.c.converted.describe()
        if converted:
            say(converted, quiet)
    for warning in pipe.warnings:
        say(f"warning: {warning}", quiet)
    return pipe


def check_kernels(device: str, dtype: str | None, exact: bool, quantize: str | None) -> None:
    """--exact, --quantize and --dtype checked before the model loads (one line each)."""
    from ..device import resolve_device, resolve_dtype
    from ..kernels import plan_for

    dev = resolve_device(device)
    plan_for(dev, None if dtype is None else resolve_dtype(dtype, dev), exact=exact, quantize=quantize)


def describe_sources(resolved) -> str:
    """--verbose: each setting with where it came from, in the command line's words."""
    from ..settings import SETTINGS

    labels = {"given": "command line", "image": "--from-image", "model": "model's vqgen.json", "default": "default"}
    return "settings: " + resolved.describe(("model", *SETTINGS), labels, FLAGS)


def read_vqgen_record(path, what: str) -> dict:
    """The vqgen record of an image file, or a one-line UsageError saying why there is none."""
    from pathlib import Path

    from ..metadata import read_record

    image = Path(path).expanduser()
    if not image.is_file():
        raise UsageError(f"{what} {str(path)!r}: no such file")
    try:
        record = read_record(image)
    except OSError:
        raise UsageError(f"{what} {str(path)!r} is not an image vqgen can read") from None
    if record is None:
        raise UsageError(f"{what} {str(path)!r} carries no vqgen metadata (it was not made by vqgen, or its text chunks were stripped)")
    return record


class ImageWriter:
    """The `on_images` callback of `vqgen generate` and `vqgen edit`: writes each image of a chunk
    as soon as the chunk exists (next free name unless --overwrite, metadata, atomic save) and
    prints its path or JSON line; `contact_sheet` then writes the --grid sheet."""

    def __init__(self, pipe, prompt: str, seeds: list[int], settings, paths: list, *, overwrite: bool, json_output: bool):
        self.pipe, self.prompt, self.seeds, self.settings, self.paths = pipe, prompt, seeds, settings, paths
        self.overwrite, self.json_output = overwrite, json_output
        self.events = None  # the TerminalEvents the run draws with; set once it is open
        self.written = []
        self.began = time.perf_counter()

    def __call__(self, first: int, chunk) -> None:
        from ..images import free_path, save_atomic
        from ..metadata import image_record, png_info

        seconds = (time.perf_counter() - self.began) / len(chunk.images)
        edits = chunk.edits or [None] * len(chunk.images)
        for i, (image, edit) in enumerate(zip(chunk.images, edits), start=first):
            record = image_record(self.pipe, self.prompt, self.seeds[i], self.settings, edit=edit)
            path = self.paths[i] if self.overwrite else free_path(self.paths[i])
            if path != self.paths[i]:
                self.events.message(f"{self.paths[i]} exists; writing {path} (use --overwrite to replace)")
            save_atomic(image, path, png_info(record))
            self.written.append(image)
            if self.json_output:
                print(json.dumps({"path": str(path), "seconds": round(seconds, 3), **record}, ensure_ascii=False), flush=True)
            else:
                print(path, flush=True)
        self.began = time.perf_counter()

    def contact_sheet(self) -> None:
        from ..images import contact_sheet, free_path, save_atomic

        first = self.paths[0]
        sheet_path = first.with_name(f"{first.stem.rsplit('-', 1)[0]}-grid{first.suffix}")
        sheet_path = sheet_path if self.overwrite else free_path(sheet_path)
        save_atomic(contact_sheet(self.written), sheet_path)
        print(json.dumps({"path": str(sheet_path), "grid": True}) if self.json_output else sheet_path, flush=True)
