"""Models that ship inside the package and run with no network: `--model shapes`.

shapes: a small VQ-Diffusion model (same architecture and folder layout as microsoft/vq-diffusion-ithq)
trained by `vqgen train-demo` on the synthetic shapes of vqgen/demo/shapes.py: 64x64 images of one
flat-coloured circle, square or triangle in one of five positions, e.g. "a red circle in the top left".
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"

BUNDLED: dict[str, Path] = {
    "shapes": MODELS_DIR / "shapes",
}

# Settings the quality benchmark (bench/bench_quality.py, docs/quality.md) supports for each bundled
# model; ITHQ's published defaults (guidance 5) do not suit a small model.
RECOMMENDED_SETTINGS: dict[str, dict] = {
    "shapes": {"steps": 25, "guidance": 1.0, "truncation": 0.86, "schedule": "strided"},
}


def bundled_model_path(name: str) -> Path | None:
    """The folder of a bundled model, or None when `name` is not one (or its files are missing)."""
    path = BUNDLED.get(name)
    if path is None or not (path / "model_index.json").is_file():
        return None
    return path


def recommended_settings(folder: Path) -> dict:
    """The settings a bundled model recommends over vqgen's global defaults (empty for others)."""
    folder = Path(folder).resolve()
    for name, path in BUNDLED.items():
        if folder == path.resolve():
            return dict(RECOMMENDED_SETTINGS.get(name, {}))
    return {}
