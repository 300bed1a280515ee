"""Models that ship inside the package and run with no network: `--model shapes`.

shapes: a small VQ-Diffusion model (same architecture and folder layout as microsoft/vq-diffusion-ithq)
trained by `vqgen train-demo` on the synthetic shapes of vqgen/demo/shapes.py: 64x64 images of one
flat-coloured circle, square or triangle in one of five positions, e.g. "a red circle in the top left".

A bundled model's recommended settings are data in its folder (vqgen.json, read by
settings.model_recommended), as for any other model.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"

BUNDLED: dict[str, Path] = {
    "shapes": MODELS_DIR / "shapes",
}


def bundled_model_path(name: str) -> Path | None:
    """The folder of a bundled model, or None when `name` is not one (or its files are missing)."""
    path = BUNDLED.get(name)
    if path is None or not (path / "model_index.json").is_file():
        return None
    return path
