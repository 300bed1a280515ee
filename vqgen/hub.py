"""Where a model reference points: a local folder, or (soon) a Hugging Face Hub repo in the cache."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import CheckpointError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_repo_id(model: str) -> bool:
    return bool(REPO_ID.match(model)) and not model.startswith((".", "/"))


def resolve_model(model: str, **_options) -> Path:
    """A local folder path for `model`: the folder itself when it exists on disk."""
    path = Path(model).expanduser()
    if path.exists() or not looks_like_repo_id(model):
        return path
    raise CheckpointError(f"model {model!r} is not a local folder, and downloading from the Hub is not built yet; pass a model folder")
