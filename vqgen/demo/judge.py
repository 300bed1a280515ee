"""Automatic judge: read a (possibly blurry / noisy) shapes image back to
its colour, shape and position.

Pipeline (numpy + PIL only):
1. estimate the background colour and measure each pixel's distance from it;
2. median-filter that distance map (kills specks and pixel noise) and
   threshold it adaptively to get a foreground mask;
3. keep the largest 4-connected component as "the shape";
4. colour  = nearest palette colour to the median RGB of the component's core;
   position = nearest rendering anchor to the component's bounding-box centre;
   shape    = triangle if the top rows are much narrower than the bottom
              rows, else square if the bounding-box corners are filled,
              else circle.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from PIL import Image

from .shapes import COLORS, POSITION_CENTERS, POSITIONS, SHAPES, ShapeSpec

SIDE = 64
MIN_CONTRAST = 60.0  # below this the image is treated as blank
MIN_AREA = 20  # px at 64x64; smaller blobs are specks, not shapes (smallest shape ~90 px)
MAX_AREA = 0.45 * SIDE * SIDE  # largest shape is 25% of the image; bigger blobs are not shapes
TRIANGLE_TAPER = 0.62  # top/bottom row-width ratio: triangle ~0.2, circle/square ~1
CORNER_REACH = 0.28  # bbox corner triangles probed for squareness (circle edge is at 0.29)
# Corner occupancy: square ~1, circle ~0; under heavy blur + JPEG circles stay
# below ~0.2 and squares above ~0.35.
SQUARE_CORNERS = 0.3

_PALETTE_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[c] for c in _PALETTE_NAMES], dtype=np.float64)


@dataclass(frozen=True)
class Verdict:
    color: Optional[str]
    shape: Optional[str]
    position: Optional[str]
    # Crude 0..1 certainty: the weakest of the colour / shape decision margins.
    confidence: float = 0.0
    # Raw features, handy for debugging generated samples.
    taper: float = 0.0
    corners: float = 0.0
    area: int = 0


NOTHING = Verdict(None, None, None)


def _to_array(image: Union[Image.Image, np.ndarray]) -> np.ndarray:
    """Any PIL image / uint8 array -> float (64, 64, 3) RGB."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.dtype != np.uint8:
            # Accept floats in [0, 1] or [0, 255].
            arr = arr.astype(np.float64)
            if arr.max() <= 1.0:
                arr = arr * 255.0
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        image = Image.fromarray(arr[..., :3])
    image = image.convert("RGB")
    if image.size != (SIDE, SIDE):
        # BOX averages whole pixels, the closest analogue of the renderer's sampling.
        image = image.resize((SIDE, SIDE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float64)


def _median3(a: np.ndarray) -> np.ndarray:
    """3x3 median filter with edge replication."""
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    stack = [p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    return np.median(np.stack(stack), axis=0)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest 4-connected component.

    Vectorised label propagation: every foreground pixel starts labelled with
    its own flat index and repeatedly takes the minimum over its neighbours;
    "pointer jumping" (a label is a pixel index, so adopt that pixel's label)
    makes it converge in a handful of sweeps instead of one per pixel of
    diameter.  Much faster than a Python BFS and needs no scipy.
    """
    h, w = mask.shape
    none = h * w  # sentinel label for background, larger than any pixel index
    labels = np.where(mask, np.arange(h * w).reshape(h, w), none)
    while True:
        p = np.pad(labels, 1, constant_values=none)
        new = np.minimum.reduce(
            [labels, p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]
        )
        new = np.where(mask, new, none)
        flat = np.append(new.ravel(), none)  # so the sentinel maps to itself
        new = flat[new]
        if np.array_equal(new, labels):
            break
        labels = new
    ids, counts = np.unique(labels[mask], return_counts=True)
    if ids.size == 0:
        return np.zeros_like(mask)
    return labels == ids[np.argmax(counts)]


def judge(image: Union[Image.Image, np.ndarray]) -> Verdict:
    rgb = _to_array(image)

    # The shape covers at most ~25% of the image, so the per-channel median is
    # the background.  Shifting it back to white undoes global colour casts.
    background = np.median(rgb.reshape(-1, 3), axis=0)
    rgb = np.clip(rgb + (255.0 - background), 0, 255)

    dist = _median3(np.linalg.norm(rgb - 255.0, axis=-1))
    # Even the smallest shape covers >4% of the image, so the 99.5th percentile
    # is a pixel inside it: a robust estimate of the shape's contrast.
    peak = np.percentile(dist, 99.5)
    if peak < MIN_CONTRAST:
        return NOTHING
    # Half the shape's contrast: blur spreads edges symmetrically, so cutting at
    # the midpoint recovers the original outline.
    mask = _largest_component(dist > peak / 2)
    area = int(mask.sum())
    if not MIN_AREA <= area <= MAX_AREA:
        return NOTHING

    # Colour from the core (upper half of the component's distances) to avoid
    # edge pixels that blur has mixed with white.
    d_in = dist[mask]
    core = rgb[mask][d_in >= np.median(d_in)]
    d_pal = np.linalg.norm(_PALETTE - np.median(core, axis=0), axis=1)
    order = np.argsort(d_pal)
    color = _PALETTE_NAMES[order[0]]
    color_margin = 1.0 - d_pal[order[0]] / max(d_pal[order[1]], 1e-9)

    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    cx, cy = (x0 + x1) / 2 / SIDE, (y0 + y1) / 2 / SIDE
    position = min(
        POSITIONS,
        key=lambda p: (POSITION_CENTERS[p][0] - cx) ** 2 + (POSITION_CENTERS[p][1] - cy) ** 2,
    )

    box = mask[y0:y1, x0:x1]
    h, w = box.shape
    # Taper: mean row width in the top quarter vs the bottom quarter.  An
    # up-pointing triangle is ~0.2 (<= 0.5 even when blur eats its apex);
    # circles and squares are symmetric, ~1.
    q = max(1, h // 4)
    widths = box.sum(axis=1).astype(np.float64)
    taper = float(widths[:q].mean() / max(widths[-q:].mean(), 1.0))
    # Corner occupancy: share of the four corner triangles (x' + y' <
    # CORNER_REACH in bbox-normalised coordinates) that is foreground.  A
    # circle barely reaches them (its boundary is at x' + y' = 0.29), a square
    # fills them; blur only rounds off the tips.
    v = (np.arange(h) + 0.5) / h
    u = (np.arange(w) + 0.5) / w
    near_v = np.minimum(v, 1 - v)[:, None]
    near_u = np.minimum(u, 1 - u)[None, :]
    corner_region = near_v + near_u < CORNER_REACH
    corners = float(box[corner_region].mean()) if corner_region.any() else 0.0

    if taper < TRIANGLE_TAPER:
        shape = "triangle"
        shape_margin = (TRIANGLE_TAPER - taper) / TRIANGLE_TAPER
    else:
        shape = "square" if corners >= SQUARE_CORNERS else "circle"
        shape_margin = abs(corners - SQUARE_CORNERS) / SQUARE_CORNERS
        shape_margin = min(shape_margin, (taper - TRIANGLE_TAPER) / (1 - TRIANGLE_TAPER))

    confidence = float(np.clip(min(color_margin * 2, shape_margin), 0.0, 1.0))
    return Verdict(color, shape, position, confidence, taper, corners, area)


def score(prompt_spec: Union[ShapeSpec, tuple, str], verdict: Verdict) -> bool:
    """True when colour, shape and position all match the prompt.

    ``prompt_spec`` may be a ShapeSpec, a (color, shape, position) tuple, or a
    canonical caption string.
    """
    if isinstance(prompt_spec, str):
        want = parse_canonical_caption(prompt_spec)
    elif isinstance(prompt_spec, ShapeSpec):
        want = (prompt_spec.color, prompt_spec.shape, prompt_spec.position)
    else:
        want = tuple(prompt_spec)
    return (verdict.color, verdict.shape, verdict.position) == want


_CANONICAL_RE = re.compile(
    r"^a (?P<color>{}) (?P<shape>{}) in the (?P<position>{})$".format(
        "|".join(COLORS), "|".join(SHAPES), "|".join(POSITIONS)
    )
)


def parse_canonical_caption(caption: str) -> tuple[str, str, str]:
    """Inverse of :func:`vqgen.demo.shapes.canonical_caption`; raises ValueError otherwise."""
    m = _CANONICAL_RE.match(caption.strip().lower())
    if m is None:
        raise ValueError(f"not a canonical shapes caption: {caption!r}")
    return m["color"], m["shape"], m["position"]
