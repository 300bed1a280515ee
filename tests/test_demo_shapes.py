"""Tests for the synthetic shapes dataset and the automatic judge (vqgen.demo)."""
import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from vqgen.demo import shapes
from vqgen.demo.judge import judge, parse_canonical_caption, score
from vqgen.demo.shapes import (
    CAPTION_TEMPLATES,
    COLORS,
    HELD_OUT,
    POSITIONS,
    SHAPES,
    ShapeSpec,
    all_combinations,
    canonical_caption,
    caption,
    is_held_out,
    make_batch,
    render,
    sample_specs,
    seen_combinations,
    unseen_combinations,
)

def _bbox(img):
    """(y0, y1, x0, x1) of the non-white pixels, end-exclusive."""
    ys, xs = np.nonzero((img != 255).any(axis=-1))
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


# --------------------------------------------------------------------------- dataset


def test_combinations_and_held_out():
    assert len(COLORS) == 6 and len(SHAPES) == 3 and len(POSITIONS) == 5
    combos = all_combinations()
    assert len(combos) == 90 == len(set(combos))
    assert HELD_OUT == {("purple", "triangle"), ("orange", "square")}
    assert len(unseen_combinations()) == 10
    assert len(seen_combinations()) == 80
    assert all(is_held_out(c, s) for c, s, _ in unseen_combinations())
    assert not any(is_held_out(c, s) for c, s, _ in seen_combinations())


def test_make_batch_is_deterministic():
    a_img, a_cap = make_batch(16, seed=123)
    b_img, b_cap = make_batch(16, seed=123)
    c_img, c_cap = make_batch(16, seed=124)
    assert a_img.shape == (16, 64, 64, 3) and a_img.dtype == np.uint8
    assert len(a_cap) == 16 and all(isinstance(c, str) for c in a_cap)
    assert np.array_equal(a_img, b_img) and a_cap == b_cap
    assert not np.array_equal(a_img, c_img)


def test_iterate_dataset_is_deterministic():
    it1, it2 = shapes.iterate_dataset(7, batch_size=8), shapes.iterate_dataset(7, batch_size=8)
    for _ in range(2):
        (i1, c1), (i2, c2) = next(it1), next(it2)
        assert i1.shape == (8, 64, 64, 3)
        assert np.array_equal(i1, i2) and c1 == c2
    assert sample_specs(20, seed=5) == sample_specs(20, seed=5)


def test_sizes_positions_and_palette():
    for spec in sample_specs(300, seed=1, include_held_out=True):
        assert 0.30 <= spec.size <= 0.50
        img = render(spec)
        # Flat colours only: exactly white + the named palette colour.
        colours = {tuple(c) for c in np.unique(img.reshape(-1, 3), axis=0).tolist()}
        assert colours == {(255, 255, 255), COLORS[spec.color]}
        y0, y1, x0, x1 = _bbox(img)
        side = max(y1 - y0, x1 - x0)
        # Pixel-centre sampling can drop a thin apex / circle-tip row, hence the
        # extra pixel of slack below for non-squares.
        slack = 1 if spec.shape == "square" else 2
        assert spec.size * 64 - slack <= side <= spec.size * 64 + 1
        assert 0.30 * 64 - slack <= side <= 0.50 * 64 + 1
        # Quadrant shapes stay inside their quadrant; centre ones near the centre.
        if spec.position == "center":
            cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
            assert abs(cx - 32) <= 4 and abs(cy - 32) <= 4
        else:
            top = spec.position.startswith("top")
            left = spec.position.endswith("left")
            assert (y1 <= 32) if top else (y0 >= 32)
            assert (x1 <= 32) if left else (x0 >= 32)


def test_render_other_resolution():
    img = render(ShapeSpec("blue", "square", "bottom right", 0.4), side=128)
    assert img.shape == (128, 128, 3)
    y0, y1, x0, x1 = _bbox(img)
    assert y0 >= 64 and x0 >= 64 and abs((y1 - y0) - 51) <= 1


def test_held_out_never_in_training():
    for spec in sample_specs(2000, seed=3):
        assert not is_held_out(spec.color, spec.shape)
    _, caps = make_batch(1000, seed=4)
    for cap in caps:
        words = cap.replace(",", "").split()
        assert not ("purple" in words and "triangle" in words), cap
        assert not ("orange" in words and "square" in words), cap
    # ...but they can be requested explicitly (for evaluation).
    specs = sample_specs(500, seed=3, include_held_out=True)
    held = [s for s in specs if is_held_out(s.color, s.shape)]
    assert held


def test_canonical_caption_format():
    assert canonical_caption("red", "circle", "top left") == "a red circle in the top left"
    assert canonical_caption("blue", "square", "center") == "a blue square in the center"
    spec = ShapeSpec("green", "triangle", "bottom right", 0.4)
    assert caption(spec, 0) == "a green triangle in the bottom right"
    for combo in all_combinations():
        assert parse_canonical_caption(canonical_caption(*combo)) == combo
    with pytest.raises(ValueError):
        parse_canonical_caption("the top left has a red circle")


def test_every_template_names_all_attributes():
    assert 4 <= len(CAPTION_TEMPLATES) <= 6
    for color, shape, position in all_combinations():
        spec = ShapeSpec(color, shape, position, 0.4)
        for i in range(len(CAPTION_TEMPLATES)):
            text = caption(spec, i)
            assert color in text and shape in text and position in text, text


# --------------------------------------------------------------------------- judge


def _clean_specs():
    """All 90 combinations at min/mid/max size, unjittered and at extreme jitters."""
    out = []
    for color, shape, position in all_combinations():
        for size in (0.30, 0.40, 0.50):
            j = shapes.max_jitter(position, size)
            for jx, jy in ((0.0, 0.0), (j, -j), (-j, j)):
                out.append(ShapeSpec(color, shape, position, size, jx, jy))
    return out


def test_judge_perfect_on_clean_renders():
    wrong = [s for s in _clean_specs() if not score(s, judge(render(s)))]
    assert not wrong, wrong[:5]


def test_judge_accepts_pil_and_other_sizes():
    spec = ShapeSpec("yellow", "triangle", "top right", 0.45)
    v = judge(Image.fromarray(render(spec, side=256)))
    assert (v.color, v.shape, v.position) == ("yellow", "triangle", "top right")
    assert score("a yellow triangle in the top right", v)
    assert score(("yellow", "triangle", "top right"), v)
    assert not score(("yellow", "circle", "top right"), v)


def _blur(img, rng):
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(1.5)))


def _noise(img, rng):
    return np.clip(img + rng.normal(0, 15, img.shape), 0, 255).astype(np.uint8)


def _shift(img, rng):
    return np.clip(img.astype(int) + rng.integers(-20, 21, size=3), 0, 255).astype(np.uint8)


def _jpeg(img, rng):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=30)
    return np.asarray(Image.open(buf).convert("RGB"))


def _specks(img, rng):
    img = img.copy()
    for _ in range(6):
        img[rng.integers(64), rng.integers(64)] = rng.integers(0, 256, size=3)
    return img


def _everything(img, rng):
    for f in (_blur, _noise, _shift, _jpeg, _specks):
        img = f(img, rng)
    return img


@pytest.mark.parametrize("degrade", [_blur, _noise, _shift, _jpeg, _specks, _everything])
def test_judge_robust_to_degradation(degrade):
    rng = np.random.default_rng(0)
    # All 90 combinations at the extreme sizes, each at a random legal jitter.
    specs = [
        ShapeSpec(c, s, p, size, *rng.uniform(-1, 1, 2) * shapes.max_jitter(p, size))
        for c, s, p in all_combinations()
        for size in (0.30, 0.50)
    ]
    correct = sum(score(spec, judge(degrade(render(spec), rng))) for spec in specs)
    assert correct / len(specs) >= 0.97, f"{degrade.__name__}: {correct}/{len(specs)}"


def test_judge_blank_images_give_nothing():
    rng = np.random.default_rng(0)
    blank = np.full((64, 64, 3), 255, np.uint8)
    for img in (blank, _noise(blank, rng), _specks(blank, rng), _jpeg(_noise(blank, rng), rng)):
        v = judge(img)
        assert (v.color, v.shape, v.position) == (None, None, None)
        assert not score(("red", "circle", "center"), v)
