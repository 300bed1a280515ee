"""Steps that every generating command shares: finding the model, then loading it.

Split in two so that a command can check its settings against the model's chain length (read
from two small config files) before paying for the slow load of the weights.
"""

from __future__ import annotations

import typer

from .. import defaults
from ..errors import UsageError
from .progress import say, status


def find_model(model: str, *, revision: str | None, offline: bool, quiet: bool):
    """(ResolvedModel, the model's usable Chain), or a one-line error about the folder/repo."""
    from ..hub import resolve_model
    from ..loader import check_model_folder, read_chain

    resolved = resolve_model(model, revision=revision, offline=offline or None, quiet=quiet)
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
    for warning in pipe.warnings:
        say(f"warning: {warning}", quiet)
    return pipe


def check_kernels(device: str, dtype: str | None, exact: bool, quantize: str | None) -> None:
    """--exact, --quantize and --dtype checked before the model loads (one line each)."""
    from ..device import resolve_device, resolve_dtype
    from ..kernels import plan_for

    dev = resolve_device(device)
    plan_for(dev, None if dtype is None else resolve_dtype(dtype, dev), exact=exact, quantize=quantize)


# The generation options that `generate` and `batch` share, defined once so that their names,
# defaults (from defaults.py) and help can never drift apart.
class Opt:
    model = typer.Option(defaults.MODEL, "--model", "-m", help="Local model folder, bundled model name (shapes) or Hub repo id.")
    steps = typer.Option(defaults.STEPS, "--steps", help="Denoising steps, 1..T (default: T, the model's whole chain: 100 for ITHQ; less if its transformer knows fewer timesteps).")
    guidance = typer.Option(defaults.GUIDANCE, "--guidance", help="Classifier-free guidance scale; 1 turns guidance off (half the work per step).")
    truncation = typer.Option(defaults.TRUNCATION, "--truncation", help="Keep the most likely codes up to this cumulative probability, in (0, 1].")
    schedule = typer.Option(defaults.SCHEDULE, "--schedule", help="strided: S steps spread over the whole chain; diffusers: the reference's last S steps.")
    sampler = typer.Option(defaults.SAMPLER, "--sampler", help="posterior: the plain posterior; purity: the purity prior of Improved VQ-Diffusion.")
    purity_weight = typer.Option(defaults.PURITY_WEIGHT, "--purity-weight", help="How much purity sharpens new tokens (purity sampler).")
    revision = typer.Option(None, "--revision", help="Hub branch, tag or commit of --model.")
    offline = typer.Option(False, "--offline", help="Use only the local cache; never touch the network (also HF_HUB_OFFLINE=1).")
    device = typer.Option(defaults.DEVICE, "--device", help="auto, cpu, cuda, cuda:N or mps.")
    dtype = typer.Option(defaults.DTYPE, "--dtype", help="The transformer's dtype: float32, float16 or bfloat16 (default: bfloat16 on CPUs with bf16 units, else float32; float16 on GPUs).")
    exact = typer.Option(defaults.EXACT, "--exact", help="The reference's arithmetic: the same image as diffusers, bit for bit (slower on most CPUs).")
    quantize = typer.Option(defaults.QUANTIZE, "--quantize", help="int8: int8 weights and activations in the transformer's Linear layers (CPU; fastest, approximate).")
    verbose = typer.Option(False, "--verbose", "-v", help="Also say which kernels run (dtype, GEMM path, quantization, CPU flags).")
    quiet = typer.Option(False, "--quiet", "-q", help="No progress or messages on stderr; stdout still lists the images written.")


def recommended_for(ctx, resolved, keep: set[str] = frozenset()) -> dict:
    """The model's recommended settings (a bundled model's) for the options that the command line
    did not give and that are not in `keep`. Where the model recommends nothing, defaults.py rules."""
    from ..bundled import recommended_settings

    given = {name for name in ctx.params if ctx.get_parameter_source(name).name == "COMMANDLINE"}
    return {k: v for k, v in recommended_settings(resolved.path).items() if k not in given and k not in keep}


def validate_basics(steps, guidance, truncation, num_images) -> None:
    """Checks that need no model, done before the (slow) model load."""
    from ..pipeline import Settings

    Settings(steps=steps, guidance=guidance, truncation=truncation).validate(None)
    if num_images < 1:
        raise UsageError(f"-n {num_images}: the number of images must be at least 1")


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
