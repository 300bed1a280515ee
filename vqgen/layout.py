"""The layout of a VQ-Diffusion model folder, as diffusers writes it, plus vqgen's own file.

Constants and one small record (no torch, no huggingface_hub): loader.py reads folders in this
layout, cache.py and hub.py recognise them in the Hugging Face cache, demo/export.py writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PIPELINE_CLASS = "VQDiffusionPipeline"  # model_index.json's _class_name
NULL_FOLDER = "learned_classifier_free_sampling_embeddings"  # the learned guidance embedding

# vqgen's own file beside model_index.json, optional: {"recommended": {setting: value, ...}}, the
# settings the model's authors recommend over vqgen's global defaults (settings.py).
VQGEN_FILE = "vqgen.json"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model reference points (hub.resolve_model), and what image metadata records of it."""

    path: Path  # a local folder in the layout loader.py reads
    name: str  # what the user passed: a repo id, a bundled model's name or a folder
    repo_id: str | None = None
    revision: str | None = None  # as requested (branch, tag or commit)
    commit: str | None = None  # the exact commit the files come from, for image metadata
    precision: str | None = None  # "fp16" / "fp32" for Hub models
