"""Editing (vqgen/editing.py, Pipeline.edit): inpainting and variations on the bundled shapes model."""

from __future__ import annotations

import struct
from pathlib import Path
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vqgen.bundled import bundled_model_path
from vqgen.demo import shapes
from vqgen.demo.judge import judge, score
from vqgen.editing import (
    EditError, EditOptions, MAX_PIXELS, feather_alpha, fit_image, fit_mask, open_image, paste_back, prepare_source,
    q_sample, read_mask, strength_timestep, token_mask, to_rgb,
)
from vqgen.errors import SettingError, UsageError, VqgenError
from vqgen.pipeline import Pipeline, Settings
from vqgen.schedule import timesteps_for, timesteps_from

SIDE, CELL = 64, 8


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_folder(bundled_model_path("shapes"), device="cpu", dtype="float32", exact=True)


@pytest.fixture(scope="module")
def source(pipe):
    """A generated red circle in the top left (the judge reads it right)."""
    image = pipe("a red circle in the top left", seed=5).images[0]
    assert score(("red", "circle", "top left"), judge(image))
    return image


def quadrant_mask(position="top left") -> Image.Image:
    m = np.zeros((SIDE, SIDE), dtype=np.uint8)
    y = 0 if position.startswith("top") else 32
    x = 0 if position.endswith("left") else 32
    m[y:y + 32, x:x + 32] = 255
    return Image.fromarray(m, "L")


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


# ------------------------------------------------------------------------------------------
# The invariant: everything repainted at strength 1 is plain generation, bit for bit.


@pytest.mark.parametrize("schedule,sampler,guidance", [
    ("strided", "posterior", 1.0), ("diffusers", "posterior", 1.0), ("strided", "purity", 1.0), ("strided", "posterior", 3.0),
])
def test_full_white_mask_at_strength_one_is_generation(pipe, source, schedule, sampler, guidance):
    settings = dict(steps=10, schedule=schedule, sampler=sampler, guidance=guidance)
    white = Image.new("L", (300, 200), 255)  # any size: resized to the image
    edited = pipe.edit(source, "a blue square in the center", white, seed=11, num_images=2, **settings)
    generated = pipe("a blue square in the center", seed=11, num_images=2, **settings)
    assert edited.timesteps == generated.timesteps
    assert edited.seeds == generated.seeds == [11, 12]
    for a, b in zip(edited.images, generated.images):
        assert np.array_equal(pixels(a), pixels(b))
    assert type(edited) is type(generated)
    # No mask at strength 1 (a "variation" from scratch) and a whole-image region are generation too.
    for kwargs in (dict(mask=None), dict(mask=None, region=(0, 0, 64, 64))):
        again = pipe.edit(source, "a blue square in the center", seed=11, **kwargs, **settings)
        assert np.array_equal(pixels(again.images[0]), pixels(generated.images[0]))


def test_full_mask_is_generation_for_every_keep_mode(pipe, source):
    generated = pipe("a green triangle in the bottom right", seed=3, steps=8)
    for keep in ("clamp", "noised", "free"):
        edited = pipe.edit(source, "a green triangle in the bottom right", Image.new("1", (64, 64), 1), seed=3, steps=8, keep=keep)
        assert np.array_equal(pixels(edited.images[0]), pixels(generated.images[0])), keep


# ------------------------------------------------------------------------------------------
# Inpainting


def test_inpainting_repaints_the_hole_and_keeps_the_rest(pipe, source):
    mask = quadrant_mask("top left")
    result = pipe.edit(source, "a blue square in the top left", mask, seed=1, num_images=3)
    assert result.edits[0].start_timestep == 99 and result.edits[0].options.keep == "noised"  # the defaults
    fitted = pixels(source)
    pixel_mask = np.asarray(mask) > 0
    outside = ~np.asarray(Image.fromarray(pixel_mask).resize((64, 64)))
    far = outside.copy()
    far[:32 + 4, :32 + 4] = False  # the 4-pixel feather (half a cell) beyond the mask
    for image, info in zip(result.images, result.edits):
        out = pixels(image)
        assert np.array_equal(out[far], fitted[far])  # original pixels, exactly, outside the feather
        # The kept tokens are the source's at the end, whatever the chain did.
        kept = ~torch.from_numpy(info.source.repaint.reshape(-1))
        assert torch.equal(info.tokens[kept], info.source_tokens[kept])
        assert info.source.repaint.sum() == 36  # the 4x4 quadrant grown by 2 tokens (clipped at the border)
    right = sum(score(("blue", "square", "top left"), judge(image)) for image in result.images)
    assert right >= 2, [judge(i) for i in result.images]


def test_no_paste_gives_the_raw_decode_and_clamping_keeps_tokens(pipe, source):
    mask = quadrant_mask("bottom right")
    raw = pipe.edit(source, "a yellow circle in the bottom right", mask, seed=4, paste=False)
    pasted = pipe.edit(source, "a yellow circle in the bottom right", mask, seed=4)
    info = raw.edits[0]
    assert np.array_equal(pixels(raw.images[0]), pixels(pipe.decode(info.tokens[None])[0]))
    # Inside the mask the written image is the decode (with the context predicted around the hole).
    inside = np.asarray(mask) > 0
    assert np.array_equal(pixels(pasted.images[0])[inside], pixels(pasted.edits[0].decoded)[inside])
    assert torch.equal(pasted.edits[0].tokens, info.tokens)  # the same chain; only the decoding differs
    assert info.record()["repainted_tokens"] == 36 and info.record()["strength"] == 1.0


def test_predicted_context_changes_only_the_decoding(pipe, source):
    """The VQ-VAE decoder's GroupNorms see the whole grid: next to the red source's kept tokens, new
    blue tokens decode purple. Re-predicting the kept positions from the new content for decoding
    (then pasting the original pixels back) gives the colour asked for."""
    mask = quadrant_mask("top left")
    kwargs = dict(seed=1, num_images=2, keep="clamp", start="top")
    predicted = pipe.edit(source, "a blue square in the top left", mask, context="predicted", **kwargs)
    kept_source = pipe.edit(source, "a blue square in the top left", mask, context="source", **kwargs)
    for a, b in zip(predicted.edits, kept_source.edits):
        assert torch.equal(a.tokens, b.tokens)
        assert np.array_equal(pixels(b.decoded), pixels(pipe.decode(b.tokens[None])[0]))
    assert [judge(i).color for i in predicted.images] == ["blue", "blue"]
    assert [judge(i).color for i in kept_source.images] == ["purple", "purple"]


def test_start_match_begins_where_the_masked_share_matches(pipe, source):
    result = pipe.edit(source, "a red circle in the top left", quadrant_mask(), seed=2, start="match", grow=0, steps=25)
    share = 16 / 64
    t0 = result.edits[0].start_timestep
    ctt = pipe.c.schedule.ctt
    assert abs(ctt[t0] - share) <= abs(ctt[t0 + 1] - share) and abs(ctt[t0] - share) <= abs(ctt[t0 - 1] - share)
    assert result.timesteps[0] == t0 and result.timesteps[-1] == 0


def test_kept_tokens_free_can_drift_but_clamped_cannot(pipe, source):
    mask = quadrant_mask("top right")
    for keep in ("clamp", "noised"):
        info = pipe.edit(source, "a purple circle in the top right", mask, seed=9, keep=keep, paste=False).edits[0]
        kept = ~torch.from_numpy(info.source.repaint.reshape(-1))
        assert torch.equal(info.tokens[kept], info.source_tokens[kept]), keep


def test_fill_changes_what_the_encoder_sees_only_inside_the_mask(pipe, source):
    src = pipe.prepare_source(source, quadrant_mask("top left"))
    filled = pixels(src.encoder_input("median"))
    assert np.array_equal(filled[32:, :], pixels(source)[32:, :])
    assert (filled[:32, :32] == filled[40, 40]).all()  # the kept pixels' median: the white background
    assert src.encoder_input("none") is src.image


# ------------------------------------------------------------------------------------------
# Variations


def test_variation_at_low_strength_keeps_the_attributes(pipe, source):
    result = pipe.edit(source, "a red circle in the top left", strength=0.3, seed=21, num_images=4)
    t0 = result.edits[0].start_timestep
    assert t0 == strength_timestep(pipe.c.schedule, 100, 0.3) == 30
    assert result.timesteps[0] == 30 and len(result.timesteps) < 25
    changed = 0
    for image, info in zip(result.images, result.edits):
        assert score(("red", "circle", "top left"), judge(image))
        changed += int((info.tokens != info.source_tokens).sum())
    assert changed > 0  # a variation, not a copy
    again = pipe.edit(source, "a red circle in the top left", strength=0.3, seed=21)
    assert np.array_equal(pixels(again.images[0]), pixels(result.images[0]))  # the seed decides


def test_strength_timestep_follows_the_corruption(pipe):
    s = pipe.c.schedule
    assert strength_timestep(s, 100, 1.0) == 99
    assert strength_timestep(s, 100, 0.5) in (49, 50)
    assert strength_timestep(s, 100, 1e-6) == 0
    assert strength_timestep(s, 12, 1.0) == 11  # a short usable chain: its top


def test_q_sample_draws_the_forward_marginal(pipe):
    s = pipe.c.schedule
    K = s.num_classes
    t = 40
    x0 = torch.randint(0, K - 1, (2, 200_000), generator=torch.Generator().manual_seed(0))
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    xt = q_sample(x0, t, s, gens)
    masked = (xt == K - 1).double().mean().item()
    same = (xt == x0).double().mean().item()
    assert abs(masked - s.ctt[t]) < 0.005
    assert abs(same - (s.att[t] + s.btt[t])) < 0.005
    other = xt[(xt != x0) & (xt != K - 1)]
    assert other.numel() < 0.01 * xt.numel()  # btt * (K-2) is tiny at this schedule
    # Two draws of N uniforms per row, from that row's generator: reproducible row by row.
    again = q_sample(x0[1:], t, s, [torch.Generator().manual_seed(2)])
    assert torch.equal(again[0], xt[1])
    # Rows that do not draw are left alone and consume nothing.
    g = torch.Generator().manual_seed(3)
    assert torch.equal(q_sample(x0[:1], t, s, [g], rows=[False])[0], x0[0])
    assert torch.equal(torch.rand(1, generator=g), torch.rand(1, generator=torch.Generator().manual_seed(3)))


def test_timesteps_from():
    for schedule in ("strided", "diffusers"):
        for steps in (1, 10, 25, 100):
            assert timesteps_from(schedule, 100, steps, 99) == timesteps_for(schedule, 100, steps)
    t = timesteps_from("strided", 100, 25, 30)
    assert t[0] == 30 and t[-1] == 0 and len(t) == 8 and t == sorted(set(t), reverse=True)
    assert timesteps_from("diffusers", 100, 25, 30) == list(range(24, -1, -1))
    assert timesteps_from("diffusers", 100, 25, 10) == list(range(10, -1, -1))
    assert timesteps_from("strided", 100, 1, 30) == [30]
    assert timesteps_from("strided", 100, 100, 5) == [5, 4, 3, 2, 1, 0]


# ------------------------------------------------------------------------------------------
# Masks and token masks


def test_token_mask_any_pixel_and_grow():
    m = np.zeros((64, 64), dtype=bool)
    m[17, 42] = True  # one pixel: the cell (2, 5)
    t = token_mask(m, CELL)
    assert t.sum() == 1 and t[2, 5]
    g = token_mask(m, CELL, grow=1)
    assert g.sum() == 9 and g[1:4, 4:7].all()
    corner = np.zeros((64, 64), dtype=bool)
    corner[0, 0] = True
    assert token_mask(corner, CELL, grow=2).sum() == 9  # clipped at the border


def test_mask_modes_and_how_they_are_read():
    size = (64, 64)
    # White on black, any size: resized to the image.
    m = np.zeros((16, 16), dtype=np.uint8)
    m[:4, :4] = 255
    got, how = read_mask(Image.fromarray(m), "'m'", size)
    assert got.shape == (64, 64) and got[:16, :16].all() and got.sum() == 256 and "brightness" in how
    # Transparency: opaque = repaint, whatever the colour.
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 30, 30)
    rgba[40:, 40:, 3] = 255
    got, how = read_mask(Image.fromarray(rgba, "RGBA"), "'m'", size)
    assert got[40:, 40:].all() and got.sum() == 24 * 24 and "transparency" in how
    # RGBA that is opaque everywhere: read by brightness.
    rgba[..., 3] = 255
    rgba[..., :3] = 0
    rgba[:8, :8, :3] = 255
    got, how = read_mask(Image.fromarray(rgba, "RGBA"), "'m'", size)
    assert got.sum() == 64 and "brightness" in how
    # Mode 1 and P.
    got, _ = read_mask(Image.fromarray(m).convert("1"), "'m'", size)
    assert got.sum() == 256
    got, _ = read_mask(Image.fromarray(m).convert("P"), "'m'", size)
    assert got.sum() == 256


def test_masks_that_are_not_masks():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(EditError, match="does not look like a mask: read by its brightness.*coloured"):
        read_mask(photo, "'photo.jpg'", (64, 64))
    grey = Image.fromarray(rng.integers(60, 200, (64, 64), dtype=np.uint8))
    with pytest.raises(EditError, match="neither black nor white"):
        read_mask(grey, "'g.png'", (64, 64))
    with pytest.raises(EditError, match="nothing to repaint.*all black"):
        read_mask(Image.new("L", (64, 64), 0), "'black.png'", (64, 64))
    with pytest.raises(EditError, match="nothing to repaint.*transparent"):
        read_mask(Image.new("RGBA", (64, 64), (255, 255, 255, 0)), "'clear.png'", (64, 64))


# ------------------------------------------------------------------------------------------
# Source images: modes, formats, fitting


def _two_colour(w=128, h=64) -> np.ndarray:
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[:, : w // 2] = (200, 20, 20)
    a[:, w // 2:] = (20, 20, 200)
    return a


@pytest.mark.parametrize("mode,suffix", [
    ("RGB", ".png"), ("RGBA", ".png"), ("L", ".png"), ("P", ".png"), ("CMYK", ".jpg"), ("RGB", ".jpg"),
    ("RGB", ".webp"), ("LA", ".png"), ("I;16", ".png"),
])
def test_source_image_modes(tmp_path, mode, suffix):
    rgb = Image.fromarray(_two_colour(80, 80))
    if mode == "I;16":
        arr = (np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
        image = Image.fromarray(arr)
    else:
        image = rgb.convert(mode)
    path = tmp_path / f"src{suffix}"
    image.save(path)
    src = prepare_source(path, size=(64, 64), cell=CELL)
    assert src.image.mode == "RGB" and src.image.size == (64, 64)
    assert src.repaint.all() and src.pixel_mask is None
    arr = pixels(src.image)
    if mode in ("L", "I;16", "LA"):
        # Grey levels kept, not clipped to white: 16 bits are scaled, not cut at 255.
        lum = np.asarray(rgb.convert("L"))[40, 10]
        assert abs(int(arr[32, 4, 0]) - int(lum)) <= 2
    else:
        assert arr[32, 4, 0] > 150 and arr[32, 60, 2] > 150  # red left, blue right


def test_transparent_pixels_become_white():
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:32, :, 3] = 255
    out = pixels(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert (out[:32] == (255, 0, 0)).all() and (out[32:] == 255).all()


def test_fit_crop_pad_stretch():
    image = Image.fromarray(_two_colour(128, 64))
    crop = pixels(fit_image(image, (64, 64), "crop"))  # the centre 64x64: half red, half blue
    assert (crop[:, :30, 0] > 150).all() and (crop[:, 34:, 2] > 150).all()
    pad = pixels(fit_image(image, (64, 64), "pad"))  # 64x32 in the middle, white above and below
    assert (pad[:16] == 255).all() and (pad[-16:] == 255).all() and pad[32, 5, 0] > 150
    stretch = pixels(fit_image(image, (64, 64), "stretch"))
    assert stretch[0, 5, 0] > 150 and stretch[63, 60, 2] > 150
    same = Image.fromarray(_two_colour(64, 64))
    assert fit_image(same, (64, 64), "pad") is same  # the model's size: used as it is
    # The mask follows the image's geometry; a model pixel is masked when any source pixel is.
    m = np.zeros((64, 128), dtype=bool)
    m[0, 127] = True
    assert fit_mask(m, (64, 64), "stretch")[0, 63]
    assert not fit_mask(m, (64, 64), "crop").any()
    assert fit_mask(m, (64, 64), "pad")[16, 63]


def test_mask_outside_the_cropped_part(tmp_path):
    image = Image.fromarray(_two_colour(128, 64))
    m = np.zeros((64, 128), dtype=np.uint8)
    m[:, :10] = 255
    with pytest.raises(EditError, match="outside the part of the image"):
        prepare_source(image, Image.fromarray(m), size=(64, 64), cell=CELL, fit="crop")
    src = prepare_source(image, Image.fromarray(m), size=(64, 64), cell=CELL, fit="stretch", grow=0)
    assert src.repaint[:, 0].all() and not src.repaint[:, 1:].any()


def test_region_and_hashes(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(_two_colour(64, 64)).save(path)
    src = prepare_source(path, region="0,0,8,8", size=(64, 64), cell=CELL, grow=0)
    assert src.repaint.sum() == 1 and src.region == (0, 0, 8, 8)
    import hashlib
    assert src.image_sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and src.mask_sha256 is None
    for bad in ("1,2,3", "a,b,c,d", "10,10,5,20", "70,70,80,80"):
        with pytest.raises(EditError, match="region"):
            prepare_source(path, region=bad, size=(64, 64), cell=CELL)


def test_paste_back_feather():
    mask = np.zeros((64, 64), dtype=bool)
    mask[16:32, 16:32] = True
    alpha = feather_alpha(mask, 4)
    assert (alpha[mask] == 1).all()
    assert alpha[14, 20] > 0 and alpha[15, 20] > alpha[14, 20]
    far = np.ones_like(mask)
    far[16 - 4:32 + 4, 16 - 4:32 + 4] = False
    assert (alpha[far] == 0).all()
    gen = Image.new("RGB", (64, 64), (0, 0, 0))
    orig = Image.new("RGB", (64, 64), (255, 255, 255))
    out = pixels(paste_back(gen, orig, mask, 4))
    assert (out[mask] == 0).all() and (out[far] == 255).all()
    assert (pixels(paste_back(gen, orig, mask, 0))[~mask] == 255).all()


# ------------------------------------------------------------------------------------------
# Bad input: one clear error each, a UsageError (exit 2 in the CLI)


def test_bad_files(tmp_path):
    with pytest.raises(EditError, match="image '.*nope.png': no such file"):
        open_image(tmp_path / "nope.png")
    with pytest.raises(EditError, match="is a folder"):
        open_image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(EditError, match="is not an image"):
        open_image(text, "mask")
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(EditError, match="damaged or truncated"):
        open_image(truncated)


def _png_header_only(path, w, h):
    """A PNG that claims w x h pixels but carries almost no data: a decompression bomb's header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 9_000, 9_000)  # over vqgen's limit, under Pillow's own
    assert 9_000 * 9_000 > MAX_PIXELS
    with pytest.raises(EditError, match="claims 9000x9000 pixels.*refused before decoding"):
        open_image(bomb)
    _png_header_only(bomb, 40_000, 40_000)  # Pillow refuses this one itself
    with pytest.raises(EditError, match="too large to decode safely"):
        open_image(bomb, "mask")


def test_bad_settings(pipe, source):
    for strength in (0, 1.5, -0.2, float("nan")):
        with pytest.raises(SettingError, match="strength .* out of range") as e:
            pipe.edit(source, "a red circle in the top left", strength=strength)
        assert e.value.setting == "strength"
    with pytest.raises(SettingError, match="grow"):
        pipe.edit(source, "x", quadrant_mask(), grow=-1)
    with pytest.raises(SettingError, match="unknown fit"):
        pipe.edit(source, "x", fit="zoom")
    with pytest.raises(EditError, match="nothing to repaint"):
        pipe.edit(source, "x", Image.new("L", (64, 64), 0))
    assert issubclass(EditError, UsageError) and issubclass(EditError, VqgenError)
    with pytest.raises(UsageError, match="steps"):
        pipe.edit(source, "x", quadrant_mask(), steps=0)


def test_edit_batch_with_different_sources_and_starts(pipe, source):
    """edit_sources runs rows with different start timesteps in groups, in the caller's order."""
    other = pipe("a green square in the bottom right", seed=8).images[0]
    a = pipe.prepare_source(source, quadrant_mask("top left"))
    b = pipe.prepare_source(other)
    settings = pipe.resolve().settings
    opts = EditOptions(strength=0.4)
    together = pipe.edit_sources([a, b, a], ["a red circle in the top left", "a green square in the bottom right", "a blue circle in the top left"],
                                 [1, 2, 3], settings, opts)
    alone = pipe.edit_sources([b], ["a green square in the bottom right"], [2], settings, opts)
    assert np.array_equal(pixels(together.images[1]), pixels(alone.images[0]))
    assert [e.source for e in together.edits] == [a, b, a]


# ------------------------------------------------------------------------------------------
# The command: vqgen edit, vqgen info, --from-image, vqgen batch


def cli(capsys, *args):
    from vqgen.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def files(tmp_path, source):
    source.save(tmp_path / "src.png")
    quadrant_mask("top left").save(tmp_path / "mask.png")
    Image.new("L", (64, 64), 255).save(tmp_path / "white.png")
    Image.new("L", (64, 64), 0).save(tmp_path / "black.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    (tmp_path / "notes.png").write_text("not an image")
    _png_header_only(tmp_path / "bomb.png", 9_000, 9_000)
    return tmp_path


def test_cli_full_white_mask_is_generate(capsys, files):
    t = files
    code, out, err = cli(capsys, "edit", t / "src.png", "a blue square in the center", "--mask", t / "white.png", "-m", "shapes",
                         "--seed", 3, "-o", t / "e.png", "--exact", "-q")
    assert code == 0, err
    assert out.splitlines() == [str(t / "e.png")] and err == ""
    code, out, err = cli(capsys, "a blue square in the center", "-m", "shapes", "--seed", 3, "-o", t / "g.png", "--exact", "-q")
    assert code == 0, err
    assert np.array_equal(pixels(Image.open(t / "e.png")), pixels(Image.open(t / "g.png")))


def test_cli_edit_metadata_info_and_from_image(capsys, files):
    import hashlib
    import json

    t = files
    code, out, err = cli(capsys, "edit", t / "src.png", "a blue square in the top left", "--mask", t / "mask.png", "-m", "shapes",
                         "--seed", 1, "-n", 2, "-o", t / "e.png", "--exact", "--json", "-q")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in rows] == [str(t / "e-0.png"), str(t / "e-1.png")]
    edit = rows[0]["edit"]
    assert edit["image_sha256"] == hashlib.sha256((t / "src.png").read_bytes()).hexdigest()
    assert edit["mask_sha256"] == hashlib.sha256((t / "mask.png").read_bytes()).hexdigest()
    assert edit["strength"] == 1.0 and edit["grow"] == 2 and edit["fit"] == "crop" and edit["paste"] is True
    code, out, err = cli(capsys, "info", t / "e-1.png")
    assert code == 0 and "edit.image_sha256" in out and "edit.strength" in out
    code, out, err = cli(capsys, "info", t / "e-1.png", "--json")
    assert json.loads(out)["edit"] == rows[1]["edit"] and json.loads(out)["seed"] == 2
    assert "Edit: inpainting" in Image.open(t / "e-1.png").text["parameters"]
    # --from-image with the same IMAGE and MASK: the same image again.
    code, out, err = cli(capsys, "edit", t / "src.png", "--mask", t / "mask.png", "--from-image", t / "e-1.png", "-o", t / "again.png", "-q")
    assert code == 0, err
    assert np.array_equal(pixels(Image.open(t / "again.png")), pixels(Image.open(t / "e-1.png")))
    # ... and one clear line when they are not the files it was made from.
    before = sorted(p.name for p in t.iterdir())
    for args, needle in [
        ((t / "photo.png", "--mask", t / "mask.png"), "is not the file --from-image"),
        ((t / "src.png",), "was made with a mask; give the same --mask"),
        ((t / "src.png", "--mask", t / "white.png"), "--mask"),
    ]:
        code, out, err = cli(capsys, "edit", *args, "--from-image", t / "e-1.png", "-o", t / "x.png")
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and needle in err, err
    code, out, err = cli(capsys, "edit", t / "src.png", "--from-image", t / "src.png", "-o", t / "x.png")
    assert code == 2 and "carries no vqgen metadata" in err
    assert sorted(p.name for p in t.iterdir()) == before
    code, out, err = cli(capsys, "a red circle", "-m", "shapes", "--steps", 2, "-o", t / "g.png", "-q")
    assert code == 0, err
    code, out, err = cli(capsys, "edit", t / "src.png", "--from-image", t / "g.png", "-o", t / "x.png")
    assert code == 2 and "was not made by vqgen edit" in err and not (t / "x.png").exists()


@pytest.mark.parametrize("args,needle", [
    (("nope.png", "x", "--mask", "mask.png"), "IMAGE 'nope.png': no such file"),
    (("src.png", "x", "--mask", "nope.png"), "--mask 'nope.png': no such file"),
    (("notes.png", "x"), "is not an image"),
    (("src.png", "x", "--mask", "notes.png"), "is not an image"),
    (("src.png", "x", "--mask", "black.png"), "has nothing to repaint: it is all black"),
    (("src.png", "x", "--mask", "photo.png"), "does not look like a mask: read by its brightness"),
    (("bomb.png", "x"), "refused before decoding"),
    (("src.png", "x", "--strength", "0"), "--strength 0.0 is out of range"),
    (("src.png", "x", "--strength", "1.5"), "--strength 1.5 is out of range"),
    (("src.png", "x", "--strength", "-1"), "--strength -1.0 is out of range"),
    (("src.png", "x", "--grow", "-1"), "--grow -1 is out of range"),
    (("src.png", "x", "--fit", "zoom"), "unknown fit 'zoom'"),
    (("src.png", "x", "--region", "1,2,3"), "--region"),
    (("src.png",), "no PROMPT given"),
    ((), "no IMAGE given"),
])
def test_cli_bad_input_one_line_exit_2_nothing_written(capsys, files, monkeypatch, args, needle):
    monkeypatch.chdir(files)
    before = sorted(p.name for p in files.iterdir())
    code, out, err = cli(capsys, "edit", *args, "-m", "shapes", "-o", "out.png")
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqgen: error: ") and "Traceback" not in err
    assert needle in lines[0], lines[0]
    assert sorted(p.name for p in files.iterdir()) == before


def test_batch_lines_with_image_mask_and_strength(capsys, files):
    import json

    t = files
    sub = t / "prompts"
    sub.mkdir()
    (sub / "p.jsonl").write_text("\n".join(json.dumps(o) for o in [
        {"prompt": "a blue square in the top left", "image": "../src.png", "mask": "../mask.png", "seed": 1},
        {"prompt": "a red circle in the top left", "image": str(t / "src.png"), "strength": 0.3, "seed": 4},
        {"prompt": "a green triangle in the center", "seed": 3},
    ]) + "\n")
    code, out, err = cli(capsys, "batch", sub / "p.jsonl", t / "out", "-m", "shapes", "--exact", "-q")
    assert code == 0, err
    made = [Path(p) for p in out.splitlines()]
    assert len(made) == 3
    code, _, err = cli(capsys, "edit", t / "src.png", "a blue square in the top left", "--mask", t / "mask.png", "-m", "shapes",
                       "--seed", 1, "-o", t / "one.png", "--exact", "-q")
    assert code == 0, err
    assert np.array_equal(pixels(Image.open(made[0])), pixels(Image.open(t / "one.png")))
    from vqgen.metadata import read_record
    assert read_record(made[1])["edit"]["strength"] == 0.3 and "edit" not in read_record(made[2])
    manifest = [json.loads(line) for line in (t / "out" / "manifest.jsonl").read_text().splitlines()]
    assert manifest[0]["edit"]["mask_sha256"] and manifest[1]["edit"]["mask_sha256"] is None
    # Re-running skips all three; another strength for the same file name is refused, not overwritten.
    code, out, err = cli(capsys, "batch", sub / "p.jsonl", t / "out", "-m", "shapes", "--exact", "-q")
    assert code == 0 and out == ""
    (sub / "p.jsonl").write_text((sub / "p.jsonl").read_text().replace('"strength": 0.3', '"strength": 0.5'))
    code, out, err = cli(capsys, "batch", sub / "p.jsonl", t / "out", "-m", "shapes", "--exact", "-q")
    assert code == 2 and "another source image, mask or strength" in err
    # Bad lines: one line naming the line, before any model loads.
    for line, needle in [({"prompt": "x", "mask": "../mask.png"}, '"mask" needs "image"'),
                         ({"prompt": "x", "image": "../nope.png"}, "p2.jsonl:1: image"),
                         ({"prompt": "x", "image": "../src.png", "mask": "../black.png"}, "nothing to repaint"),
                         ({"prompt": "x", "image": "../src.png", "strength": 0}, "strength 0.0 is out of range")]:
        (sub / "p2.jsonl").write_text(json.dumps(line) + "\n")
        code, out, err = cli(capsys, "batch", sub / "p2.jsonl", t / "out2", "-m", "shapes")
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
        assert not (t / "out2").exists() or not any((t / "out2").iterdir())
