"""Where a model reference points: a local folder, or a Hugging Face Hub repo in the cache."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # a local folder in one of the two layouts loader.py reads
    name: str  # what the user passed: a repo id or a folder
    repo_id: str | None = None
    revision: str | None = None  # as requested (branch, tag or commit)
    commit: str | None = None  # the exact commit the files come from, for image metadata
    precision: str | None = None  # "fp16" / "fp32" for Hub models


def looks_like_repo_id(model: str) -> bool:
    return bool(REPO_ID.match(model)) and not model.startswith((".", "/"))


def resolve_model(model: str, *, revision: str | None = None, precision: str | None = None,
                  offline: bool | None = None, quiet: bool = False) -> ResolvedModel:
    """A local folder for `model`: the folder itself when it exists on disk."""
    path = Path(model).expanduser()
    if path.exists() or not looks_like_repo_id(model):
        return ResolvedModel(path=path, name=model)
    raise CheckpointError(f"model {model!r} is not a local folder, and downloading from the Hub is not built yet; pass a model folder")
