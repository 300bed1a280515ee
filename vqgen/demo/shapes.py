"""Synthetic, seeded "coloured shape" dataset with captions.

Each image is 64x64 RGB on a white background with exactly one flat-coloured
shape (circle / square / up-pointing triangle) in one of five positions.  The
palette is exact (no anti-aliasing) so the judge in :mod:`vqgen.demo.judge`
can read images back reliably, and some (colour, shape) pairs are held out of
training to test compositional generalisation.

Shapes are drawn as numpy masks (numpy only); torch is never imported here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

# Ordered so indices are stable across runs / versions.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 50),
    "green": (50, 160, 70),
    "blue": (50, 90, 220),
    "yellow": (235, 200, 40),
    "purple": (140, 70, 180),
    "orange": (240, 140, 40),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "center")

BACKGROUND = (255, 255, 255)
SIZE_RANGE = (0.30, 0.50)  # shape bounding-box side as a fraction of the image side
MAX_JITTER = 3 / 64  # at most ~3 px at 64x64, expressed as a fraction of the side

# Shape centres as fractions of the side: quadrant centres, or the image centre.
POSITION_CENTERS: dict[str, tuple[float, float]] = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}

# Held-out (colour, shape) pairs: never shown in training, used to probe
# whether the model composes attributes it saw separately.
HELD_OUT: frozenset[tuple[str, str]] = frozenset({("purple", "triangle"), ("orange", "square")})

# Template 0 is the canonical one used for evaluation prompts.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {color} {shape} in the {position}",
    "{color} {shape}, {position}",
    "a {shape} that is {color} in the {position}",
    "the {position} has a {color} {shape}",
    "a {color} {shape} located in the {position}",
)

# Captions that leave one attribute out. Training may mix them in (TrainConfig.partial_captions) so
# that the text encoder learns each word's meaning on its own, not only as part of a seen pair.
PARTIAL_TEMPLATES: tuple[str, ...] = (
    "a {shape} in the {position}",
    "a {color} shape in the {position}",
    "a {color} {shape}",
)


@dataclass(frozen=True)
class ShapeSpec:
    """Everything needed to render one sample.

    ``size``, ``jitter_x`` and ``jitter_y`` are fractions of the image side so
    the same spec renders consistently at any resolution.
    """

    color: str
    shape: str
    position: str
    size: float
    jitter_x: float = 0.0
    jitter_y: float = 0.0


def is_held_out(color: str, shape: str) -> bool:
    return (color, shape) in HELD_OUT


def all_combinations() -> list[tuple[str, str, str]]:
    """All 6*3*5 = 90 (color, shape, position) triples, in a fixed order."""
    return [(c, s, p) for c in COLORS for s in SHAPES for p in POSITIONS]


def seen_combinations() -> list[tuple[str, str, str]]:
    return [t for t in all_combinations() if not is_held_out(t[0], t[1])]


def unseen_combinations() -> list[tuple[str, str, str]]:
    return [t for t in all_combinations() if is_held_out(t[0], t[1])]


def canonical_caption(color: str, shape: str, position: str) -> str:
    return CAPTION_TEMPLATES[0].format(color=color, shape=shape, position=position)


def caption(spec: ShapeSpec, template_index: int = 0) -> str:
    return CAPTION_TEMPLATES[template_index].format(
        color=spec.color, shape=spec.shape, position=spec.position
    )


def max_jitter(position: str, size: float) -> float:
    """Largest jitter (fraction of side) that keeps the shape inside its quadrant.

    A quadrant is 0.5 wide and the shape is centred in it, so the slack on each
    side is (0.5 - size) / 2; the centre position only has the image as bound.
    """
    slack = (1.0 - size) / 2 if position == "center" else (0.5 - size) / 2
    return max(0.0, min(MAX_JITTER, slack))


def _shape_mask(spec: ShapeSpec, side: int) -> np.ndarray:
    """Boolean (side, side) mask, sampled at pixel centres (hence no anti-aliasing)."""
    fx, fy = POSITION_CENTERS[spec.position]
    cx = (fx + spec.jitter_x) * side
    cy = (fy + spec.jitter_y) * side
    half = spec.size * side / 2
    ys, xs = np.mgrid[0:side, 0:side] + 0.5  # pixel centres
    if spec.shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= half**2
    if spec.shape == "square":
        return (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    if spec.shape == "triangle":
        # Isosceles, apex at top-centre, base along the bottom of the bounding
        # box; the half-width grows linearly from 0 at the apex to `half`.
        top, bottom = cy - half, cy + half
        t = (ys - top) / (bottom - top)
        return (ys >= top) & (ys <= bottom) & (np.abs(xs - cx) <= t * half)
    raise ValueError(f"unknown shape {spec.shape!r}")


def render(spec: ShapeSpec, side: int = 64) -> np.ndarray:
    """Render a spec to an (side, side, 3) uint8 array with exact palette colours."""
    img = np.empty((side, side, 3), dtype=np.uint8)
    img[...] = BACKGROUND
    img[_shape_mask(spec, side)] = COLORS[spec.color]
    return img


def _random_spec(rng: np.random.Generator, combos: list[tuple[str, str, str]]) -> ShapeSpec:
    color, shape, position = combos[rng.integers(len(combos))]
    size = float(rng.uniform(*SIZE_RANGE))
    j = max_jitter(position, size)
    jx, jy = (float(v) for v in rng.uniform(-j, j, size=2))
    return ShapeSpec(color, shape, position, size, jx, jy)


def _make_rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def sample_specs(n: int, seed: int, include_held_out: bool = False) -> list[ShapeSpec]:
    """``n`` random specs, uniform over the (seen, unless asked) combinations."""
    rng = _make_rng(seed)
    combos = all_combinations() if include_held_out else seen_combinations()
    return [_random_spec(rng, combos) for _ in range(n)]


def _batch_from_rng(
    rng: np.random.Generator, n: int, side: int, include_held_out: bool
) -> tuple[np.ndarray, list[str]]:
    combos = all_combinations() if include_held_out else seen_combinations()
    images = np.empty((n, side, side, 3), dtype=np.uint8)
    captions: list[str] = []
    for i in range(n):
        spec = _random_spec(rng, combos)
        images[i] = render(spec, side)
        # Random phrasing so the text encoder learns the words, not one template.
        captions.append(caption(spec, int(rng.integers(len(CAPTION_TEMPLATES)))))
    return images, captions


def make_batch(
    n: int, seed: int, side: int = 64, include_held_out: bool = False
) -> tuple[np.ndarray, list[str]]:
    """One deterministic training batch: (uint8 images (n, side, side, 3), captions)."""
    return _batch_from_rng(_make_rng(seed), n, side, include_held_out)


def iterate_dataset(
    seed: int, batch_size: int = 64, side: int = 64, include_held_out: bool = False
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Endless deterministic stream of training batches from one seeded generator."""
    rng = _make_rng(seed)
    while True:
        yield _batch_from_rng(rng, batch_size, side, include_held_out)
