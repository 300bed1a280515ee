"""Steps that every generating command shares: finding the model, then loading it.

Split in two so that a command can check its settings against the model's chain length (read
from a small config file) before paying for the slow load of the weights.
"""

from __future__ import annotations

from .progress import status


def find_model(model: str, *, revision: str | None, offline: bool, quiet: bool):
    """(ResolvedModel, the model's chain length T), or a one-line error about the folder/repo."""
    from ..hub import resolve_model
    from ..loader import check_model_folder, read_schedule_config

    resolved = resolve_model(model, revision=revision, offline=offline or None, quiet=quiet)
    check_model_folder(resolved.path)
    return resolved, read_schedule_config(resolved.path).num_timesteps


def load_pipeline(resolved, device, dtype, *, quiet: bool):
    """The Pipeline on a resolved torch device and dtype, with a spinner while it loads."""
    from ..pipeline import Pipeline

    with status(f"loading {resolved.name}", quiet):
        return Pipeline.from_folder(resolved.path, device=str(device), dtype=dtype, resolved=resolved)
