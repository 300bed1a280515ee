"""Editing: text-guided inpainting and image variations (SPEC section 10).

An edit starts from a source image instead of all masks:

1. the image (any mode, any size) is fitted to the model's size (`fit`: centre crop, pad or stretch)
   and encoded to tokens with the VQ-VAE encoder (nearest codebook entry);
2. the mask (white, or opaque for a mask with transparency, = repaint) is resized to the image,
   fitted the same way, and turned into a token mask: a token is repainted when any pixel of its
   f x f cell is masked, then the region grows by `grow` whole tokens; without a mask every token is
   repainted (a variation);
3. the repainted tokens start from x_t ~ q(x_t | x0 = the source's tokens) at the timestep t whose
   corruption matches `strength` (strength 1: the mask token everywhere in the hole, as generation
   starts); the others are the source's tokens;
4. the usual reverse chain runs from t, and the kept tokens are put back after every step: drawn
   again from q(x_s | x0) at the step's noise level (keep="noised", the default: the network sees
   the whole grid at the noise level it was trained for), or the source's tokens themselves
   (keep="clamp"); after the last step they are the source's tokens, so only the hole can change;
5. the decoded image gets the original pixels back outside the mask, blended over a feathered edge
   (the VQ-VAE's reconstruction of untouched regions is lossy).

With every token repainted and strength 1 this is plain generation, bit for bit: the same start,
the same timesteps, the same random draws.

Random numbers, per image (its own generator, seeded with its seed): with strength below 1, first
two draws of N uniforms (which tokens are corrupted, and to which class); with keep="noised" and
kept tokens, two more for theirs; then each step's draw exactly as in generation, followed (keep
="noised", kept tokens, not after the last step) by two draws of N for the kept tokens. An image
with nothing kept draws exactly what generation draws. Nothing here prints or imports the CLI.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import defaults
from .errors import SettingError, UsageError
from .settings import FITS  # crop, pad, stretch: one list, in settings.py

# Images with more pixels than this are refused before they are decoded (decompression bombs:
# a small file that expands to gigabytes). 64 megapixels is a 8000 x 8000 photo.
MAX_PIXELS = 64 * 1024 * 1024

STARTS = ("top", "match")  # where a strength-1 inpainting starts: T-1, or where ctt[t] = the hole's share
KEEPS = ("clamp", "noised", "free")  # how the kept tokens are treated during the chain
FILLS = ("median", "none")  # what the masked pixels are before encoding
CONTEXTS = ("predicted", "source")  # what the decoder sees outside the hole when the original is pasted back
PAD_FILL = (255, 255, 255)  # what `fit="pad"` puts around the image

# A mask is black and white (or transparent and opaque). Read as brightness, a picture with more
# coloured or mid-grey pixels than these shares is not a mask.
MASK_MAX_COLOURED = 0.10
MASK_MAX_GREY = 0.25


class EditError(SettingError):
    """A source image, mask or edit setting that cannot be used, in plain words. `setting` names
    what was wrong (image, mask, region, ...), `value` what was given; phrased(name) puts a front
    end's name for it (a flag) where the message names the setting."""

    def __init__(self, message: str, setting: str | None = None, value: Any = None, allowed: str = ""):
        UsageError.__init__(self, message)
        self.message, self.setting, self.value, self.allowed, self.template = message, setting, value, allowed, None

    def phrased(self, name: str) -> str:
        if self.setting and self.message.startswith(self.setting + " "):
            return name + self.message[len(self.setting):]
        if self.setting and self.message.startswith(f"unknown {self.setting} "):
            return f"unknown {name} " + self.message[len(f"unknown {self.setting} "):]
        return self.message


@dataclass
class EditOptions:
    """How an edit runs, beside the generation Settings. Defaults are what bench/bench_edit.py
    measured best on the shapes yardstick (docs/editing.md)."""

    strength: float = defaults.EDIT_STRENGTH  # (0, 1]: how far back along the chain the repainted tokens go
    grow: int = defaults.EDIT_GROW  # whole tokens added around the masked cells
    fit: str = defaults.EDIT_FIT
    paste: bool = defaults.EDIT_PASTE  # original pixels outside the mask
    feather: int | None = defaults.EDIT_FEATHER  # pixels of the blend ramp outside the mask; None: half a token cell
    start: str = defaults.EDIT_START  # strength 1 with a mask: start at T-1 ("top") or where ctt matches the hole ("match")
    keep: str = defaults.EDIT_KEEP  # kept tokens after every step: re-drawn from q(x_s | x0) ("noised"), the source's ("clamp"), or left ("free")
    fill: str = "median"  # before encoding, the masked pixels become the kept pixels' median colour ("none": as they are)
    context: str = "predicted"  # with paste-back, what the decoder sees around the hole: "predicted" from the new content, or the "source"'s tokens

    def validate(self) -> None:
        from .settings import check

        for name in ("strength", "grow", "fit"):
            check(name, getattr(self, name))
        if self.feather is not None and (not isinstance(self.feather, int) or self.feather < 0):
            raise EditError(f"feather {self.feather} is out of range; use 0 or more pixels", "feather", self.feather)
        if self.start not in STARTS:
            raise EditError(f"unknown start {self.start!r}; use one of {', '.join(STARTS)}", "start", self.start)
        if self.keep not in KEEPS:
            raise EditError(f"unknown keep {self.keep!r}; use one of {', '.join(KEEPS)}", "keep", self.keep)
        if self.context not in CONTEXTS:
            raise EditError(f"unknown context {self.context!r}; use one of {', '.join(CONTEXTS)}", "context", self.context)
        if self.fill not in FILLS:
            raise EditError(f"unknown fill {self.fill!r}; use one of {', '.join(FILLS)}", "fill", self.fill)

    def record(self) -> dict:
        return {"strength": self.strength, "grow": self.grow, "fit": self.fit, "paste": self.paste,
                "feather": self.feather, "start": self.start, "keep": self.keep, "fill": self.fill,
                "context": self.context}


# --------------------------------------------------------------------------------------------
# Reading images


def _describe(source) -> str:
    return repr(str(source)) if isinstance(source, (str, Path)) else f"({type(source).__name__})"


def open_image(source, what: str = "image"):
    """(PIL image, fully loaded, EXIF orientation applied; SHA-256 of the file's bytes or of the
    pixels for an in-memory image). Every failure is one EditError naming `what`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, Image.Image):
        image = source
        if image.width * image.height > MAX_PIXELS:
            raise EditError(f"{what} is {image.width}x{image.height}, more than {MAX_PIXELS // 2**20} megapixels; shrink it first", what, None)
        digest = hashlib.sha256(f"{image.mode} {image.size}".encode() + image.tobytes()).hexdigest()
        return image, digest
    if isinstance(source, np.ndarray):
        try:
            image = Image.fromarray(source)
        except (TypeError, ValueError) as e:
            raise EditError(f"{what}: an array of shape {source.shape} and dtype {source.dtype} is not an image ({e})", what, None) from None
        return open_image(image, what)
    if not isinstance(source, (str, Path)):
        raise EditError(f"{what} must be a file path, a PIL image or a numpy array, not {type(source).__name__}", what, None)
    path = Path(source).expanduser()
    name = _describe(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EditError(f"{what} {name}: no such file", what, str(source)) from None
    except IsADirectoryError:
        raise EditError(f"{what} {name} is a folder, not an image file", what, str(source)) from None
    except PermissionError:
        raise EditError(f"{what} {name} cannot be read (permission denied)", what, str(source)) from None
    except OSError as e:
        raise EditError(f"{what} {name} cannot be read ({e.strerror or e})", what, str(source)) from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            w, h = image.size  # from the header: nothing is decoded yet
            if w * h > MAX_PIXELS:
                raise EditError(f"{what} {name} claims {w}x{h} pixels, more than {MAX_PIXELS // 2**20} megapixels; "
                                "refused before decoding (it could exhaust memory); shrink it first", what, str(source))
            image.load()
    except EditError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise EditError(f"{what} {name} is too large to decode safely; shrink it first", what, str(source)) from None
    except UnidentifiedImageError:
        raise EditError(f"{what} {name} is not an image (not a format Pillow can read: PNG, JPEG, WebP, ...)", what, str(source)) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise EditError(f"{what} {name} is damaged or truncated ({str(e).splitlines()[0][:80]})", what, str(source)) from None
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block: keep the pixels as stored
        pass
    return image, digest


def _sixteen_to_eight(image):
    """Single-channel integer/float images (16-bit PNG reads as I;16 or I, TIFF floats as F) to L,
    scaling the full range instead of clipping at 255."""
    from PIL import Image

    arr = np.asarray(image)
    if image.mode == "F":
        scale = 255.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else 1.0
        out = np.clip(np.nan_to_num(arr) * scale, 0, 255)
    else:
        out = arr.astype(np.float64) / 257.0 if arr.size and arr.max() > 255 or image.mode.startswith("I;16") else arr
        out = np.clip(out, 0, 255)
    return Image.fromarray(np.round(out).astype(np.uint8), "L")


def has_alpha(image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)


def to_rgb(image):
    """Any PIL image as RGB: transparency composited over white, CMYK and YCbCr converted, 16-bit
    and float channels scaled to 8 bits."""
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _sixteen_to_eight(image)
    if has_alpha(image):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, PAD_FILL + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


# --------------------------------------------------------------------------------------------
# Fitting to the model's size


def _fit_geometry(size: tuple[int, int], target: tuple[int, int], fit: str):
    """(box in the source to resample, size it becomes, offset in the target canvas)."""
    w, h = size
    W, H = target
    if fit == "stretch":
        return (0.0, 0.0, float(w), float(h)), (W, H), (0, 0)
    if fit == "crop":
        scale = max(W / w, H / h)
        cw, ch = W / scale, H / scale
        left, top = (w - cw) / 2, (h - ch) / 2
        return (left, top, left + cw, top + ch), (W, H), (0, 0)
    scale = min(W / w, H / h)  # pad
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return (0.0, 0.0, float(w), float(h)), (nw, nh), ((W - nw) // 2, (H - nh) // 2)


def fit_image(image, target: tuple[int, int], fit: str):
    """An RGB image at exactly `target`. An image already that size is used as it is."""
    from PIL import Image

    if image.size == tuple(target):
        return image
    box, size, offset = _fit_geometry(image.size, target, fit)
    resized = image.resize(size, Image.Resampling.LANCZOS, box=box)
    if size == tuple(target):
        return resized
    canvas = Image.new("RGB", target, PAD_FILL)
    canvas.paste(resized, offset)
    return canvas


def fit_mask(mask: np.ndarray, target: tuple[int, int], fit: str) -> np.ndarray:
    """A boolean mask at the image's size -> at the model's size, by the image's geometry. A model
    pixel is masked when any part of the source pixels it covers is (area resampling, then > 0)."""
    from PIL import Image

    h, w = mask.shape
    if (w, h) == tuple(target):
        return mask.copy()
    box, size, offset = _fit_geometry((w, h), target, fit)
    f = Image.fromarray(mask.astype(np.float32), "F")
    resized = np.asarray(f.resize(size, Image.Resampling.BOX, box=box)) > 1e-6
    out = np.zeros((target[1], target[0]), dtype=bool)
    out[offset[1]:offset[1] + size[1], offset[0]:offset[0] + size[0]] = resized
    return out


# --------------------------------------------------------------------------------------------
# Masks


def read_mask(image, name: str, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """(boolean mask at `size` (the source image's size), how it was read). White, or opaque for
    a mask with transparency, means repaint. Refuses pictures that are not masks."""
    from PIL import Image

    alpha = None
    if has_alpha(image):
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if alpha.min() == 255:
            alpha = None  # transparency that is opaque everywhere: read the colours instead
    if alpha is not None:
        values, how = alpha, "by its transparency, opaque = repaint"
    else:
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            image = _sixteen_to_eight(image)
        rgb = np.asarray(image.convert("RGB")).astype(np.int16)
        coloured = float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 48).mean())
        how = "by its brightness, white = repaint (it has no transparency)"
        if coloured > MASK_MAX_COLOURED:
            raise EditError(f"mask {name} does not look like a mask: read {how}, {coloured:.0%} of its pixels are coloured; "
                            "paint what to repaint white on black (or opaque on transparent)", "mask", name)
        values = np.asarray(image.convert("L"))
    grey = float(((values > 32) & (values < 224)).mean())
    if grey > MASK_MAX_GREY:
        raise EditError(f"mask {name} does not look like a mask: read {how}, {grey:.0%} of its pixels are neither black nor white; "
                        "paint what to repaint white on black (or opaque on transparent)", "mask", name)
    binary = values >= 128
    if not binary.any():
        nothing = "fully transparent" if alpha is not None else "all black"
        raise EditError(f"mask {name} has nothing to repaint: it is {nothing} (read {how}); "
                        "paint what to repaint white (or opaque)", "mask", name)
    if binary.shape != (size[1], size[0]):
        binary = np.asarray(Image.fromarray(binary).resize(size, Image.Resampling.NEAREST))
    return binary, how


def parse_region(region) -> tuple[int, int, int, int]:
    """'X0,Y0,X1,Y1' (or a 4-sequence) -> ints, in the source image's pixels, X1/Y1 exclusive."""
    if isinstance(region, str):
        parts = [p.strip() for p in region.split(",")]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
    else:
        try:
            values = [int(v) for v in region]
        except (TypeError, ValueError):
            values = []
    if len(values) != 4:
        raise EditError(f"region {region!r} is not four whole numbers X0,Y0,X1,Y1 (pixels of the image, e.g. 0,0,128,128)", "region", region)
    return tuple(values)  # type: ignore[return-value]


def region_mask(region, size: tuple[int, int]) -> np.ndarray:
    x0, y0, x1, y1 = parse_region(region)
    w, h = size
    if not (0 <= x0 < x1 and 0 <= y0 < y1) or x0 >= w or y0 >= h:
        raise EditError(f"region {x0},{y0},{x1},{y1} is empty or outside the {w}x{h} image; "
                        "give X0,Y0,X1,Y1 with X0 < X1 and Y0 < Y1 inside it", "region", region)
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:min(y1, h), x0:min(x1, w)] = True
    return mask


def token_mask(pixel_mask: np.ndarray, cell: int, grow: int = 0) -> np.ndarray:
    """(H, W) pixels -> (H/cell, W/cell) tokens: a token is repainted when any pixel of its cell is
    masked; then the region grows by `grow` tokens in every direction (diagonals included)."""
    H, W = pixel_mask.shape
    tokens = pixel_mask.reshape(H // cell, cell, W // cell, cell).any(axis=(1, 3))
    return dilate(tokens, grow)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (chessboard) dilation by `radius` cells."""
    if radius <= 0:
        return mask.copy()
    h, w = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


# --------------------------------------------------------------------------------------------
# The source of an edit


@dataclass
class EditSource:
    """A source image ready for the model: fitted pixels, the masks, and where it came from."""

    image: Any  # PIL RGB at the model's size
    pixel_mask: np.ndarray | None  # (H, W) bool at the model's size, None: everything (a variation)
    repaint: np.ndarray  # (h, w) bool tokens to repaint (after grow)
    image_sha256: str
    mask_sha256: str | None = None
    region: tuple[int, int, int, int] | None = None
    mask_read: str | None = None  # how the mask was read, for messages
    encoded: dict = field(default_factory=dict)  # fill -> (N,) source tokens, cached by the pipeline

    def encoder_input(self, fill: str):
        """The fitted image as the encoder sees it. The VQ-VAE's GroupNorms normalise over the whole
        image, so every token carries something of the whole picture (the colour of an object in
        the hole shows in background tokens far away); with fill "median" the masked pixels are
        replaced by the kept pixels' median colour, so the kept tokens no longer describe what is
        being removed."""
        from PIL import Image

        if fill == "none" or self.pixel_mask is None or self.pixel_mask.all():
            return self.image
        arr = np.asarray(self.image).copy()
        arr[self.pixel_mask] = np.median(arr[~self.pixel_mask], axis=0).round().astype(np.uint8)
        return Image.fromarray(arr, "RGB")

    @property
    def repaint_share(self) -> float:
        return float(self.repaint.mean())

    def record(self) -> dict:
        return {"image_sha256": self.image_sha256, "mask_sha256": self.mask_sha256,
                "region": list(self.region) if self.region else None,
                "repainted_tokens": int(self.repaint.sum()), "tokens": int(self.repaint.size)}


def prepare_source(image, mask=None, *, size: tuple[int, int], cell: int, fit: str = defaults.EDIT_FIT, grow: int = defaults.EDIT_GROW,
                   region=None) -> EditSource:
    """Read and fit the source image, read the mask (and/or region) and make the token mask.
    `size` is the model's image size (width, height); `cell` its pixels per token side."""
    from .settings import check

    check("fit", fit)
    check("grow", grow)
    raw, image_sha = open_image(image, "image")
    source_size = raw.size
    fitted = fit_image(to_rgb(raw), size, fit)

    pixel_mask, mask_sha, how = None, None, None
    if mask is not None:
        raw_mask, mask_sha = open_image(mask, "mask")
        full, how = read_mask(raw_mask, _describe(mask), source_size)
        pixel_mask = full
    box = None
    if region is not None:
        box = parse_region(region)
        rect = region_mask(box, source_size)
        pixel_mask = rect if pixel_mask is None else (pixel_mask | rect)
    if pixel_mask is not None:
        pixel_mask = fit_mask(pixel_mask, size, fit)
        if not pixel_mask.any():
            raise EditError(f"the area to repaint lies outside the part of the image that fit={fit!r} keeps; "
                            "use fit pad or stretch, or move the mask", "mask", None)
        repaint = token_mask(pixel_mask, cell, grow)
    else:
        repaint = np.ones((size[1] // cell, size[0] // cell), dtype=bool)
    return EditSource(fitted, pixel_mask, repaint, image_sha, mask_sha, box, how)


# --------------------------------------------------------------------------------------------
# Where the chain starts, and the noising


def strength_timestep(schedule, length: int, strength: float) -> int:
    """The timestep (of the usable chain 0..length-1) whose corruption, the share of tokens that are
    no longer themselves (1 - att - btt), is nearest `strength`. Strength 1: the top, length - 1."""
    if strength >= 1:
        return length - 1
    corruption = 1 - schedule.att[:length] - schedule.btt[:length]
    return int(np.argmin(np.abs(corruption - strength)))


def match_timestep(schedule, length: int, share: float) -> int:
    """The timestep whose expected masked share ctt[t] is nearest `share` (the hole's share)."""
    return int(np.argmin(np.abs(schedule.ctt[:length] - share)))


def q_sample(x0, t: int, schedule, generators, rows=None):
    """x_t ~ q(x_t | x0) for each row of x0 (B, N), exactly from the forward marginal: the mask with
    ctt[t], x0 itself with att[t] + btt[t], any other real class with btt[t]. Each row draws two
    (N,) uniforms from its generator (mask-or-not, then the class); `rows` (bools) limits which
    rows draw (the others are returned unchanged)."""
    import torch

    K = schedule.num_classes
    att, ctt = float(schedule.att[t]), float(schedule.ctt[t])
    out = x0.clone()
    for b, g in enumerate(generators):
        if rows is not None and not rows[b]:
            continue
        n = x0.shape[1]
        u = torch.rand((n,), generator=g, device=x0.device)
        v = torch.rand((n,), generator=g, device=x0.device)
        uniform = (v * (K - 1)).floor().long().clamp(max=K - 2)
        row = torch.where(u < ctt + att, x0[b], uniform)
        out[b] = torch.where(u < ctt, K - 1, row)
    return out


@dataclass
class TokenEdit:
    """What the generation loop needs to run an edit instead of a generation (Pipeline.generate_tokens):
    the source tokens, which to repaint, and how to start and clamp. All rows share one start
    timestep (the network takes one t for the batch)."""

    x0: Any  # (B, N) long
    repaint: Any  # (B, N) bool
    strength: float
    keep: str
    schedule: Any  # NoiseSchedule
    start_timestep: int
    # The decoder's GroupNorms mix the whole grid: decoded next to the source's kept tokens, new
    # content takes on the old content's colours. With a context timestep, after the chain the kept
    # positions are masked and re-predicted from the new tokens (one network call at this t, argmax):
    # decode_tokens is what to decode; the original pixels outside the mask come back by paste-back.
    context_timestep: int | None = None
    decode_tokens: Any = None

    def context_input(self, x):
        import torch

        return torch.where(self.repaint, x, self.schedule.num_classes - 1)

    def with_context(self, x, predicted):
        import torch

        return torch.where(self.repaint, x, predicted)

    def initial(self, t: int, generators):
        """x_t for the first timestep t of the chain."""
        import torch

        mask_id = self.schedule.num_classes - 1
        if self.strength >= 1:
            hole = torch.full_like(self.x0, mask_id)  # the prior: no random numbers, as generation
        else:
            hole = q_sample(self.x0, t, self.schedule, generators)
        x = torch.where(self.repaint, hole, self.x0)
        if self.keep == "noised":
            x = torch.where(self.repaint, x, q_sample(self.x0, t, self.schedule, generators, rows=self._has_kept()))
        return x

    def after_step(self, x, s: int, generators):
        """Put the kept tokens back after a step that produced x_s (s = -1: the final x0)."""
        import torch

        if self.keep == "free":
            return x
        if self.keep == "noised" and s >= 0:
            return torch.where(self.repaint, x, q_sample(self.x0, s, self.schedule, generators, rows=self._has_kept()))
        return torch.where(self.repaint, x, self.x0)

    def _has_kept(self) -> list[bool]:
        return [bool(v) for v in (~self.repaint).any(dim=1).tolist()]


# --------------------------------------------------------------------------------------------
# Paste-back


def feather_alpha(mask: np.ndarray, feather: int) -> np.ndarray:
    """(H, W) float in [0, 1]: 1 on the mask, falling to 0 over `feather` pixels outside it
    (dilate by feather/2, then a box blur of the same radius), exactly 0 beyond."""
    alpha = mask.astype(np.float64)
    r = feather // 2
    if r <= 0:
        return alpha
    grown = dilate(mask, r).astype(np.float64)
    padded = np.pad(grown, r, mode="edge")
    k = 2 * r + 1
    # Box blur via cumulative sums over the padded image.
    c = padded.cumsum(axis=0).cumsum(axis=1)
    c = np.pad(c, ((1, 0), (1, 0)))
    h, w = mask.shape
    total = c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]
    blurred = total / (k * k)
    out = np.where(mask, 1.0, np.clip(blurred, 0.0, 1.0))
    out[np.abs(out) < 1e-9] = 0.0
    out[np.abs(out - 1) < 1e-9] = 1.0
    return out


def paste_back(generated, original, mask: np.ndarray, feather: int):
    """The generated image inside the mask, the original outside, blended over the feather."""
    from PIL import Image

    alpha = feather_alpha(mask, feather)[..., None]
    g = np.asarray(generated.convert("RGB"), dtype=np.float64)
    o = np.asarray(original.convert("RGB"), dtype=np.float64)
    out = np.where(alpha >= 1, g, np.where(alpha <= 0, o, np.round(alpha * g + (1 - alpha) * o)))
    return Image.fromarray(out.astype(np.uint8), "RGB")


def image_to_tensor(image, device, dtype):
    """PIL RGB -> (1, 3, H, W) in [-1, 1], as the VQ-VAE was trained."""
    import torch

    arr = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).copy())
    return (arr.permute(2, 0, 1)[None] / 127.5 - 1).to(device=device, dtype=dtype)


@dataclass
class EditInfo:
    """What one edited image was made from (for metadata and --json)."""

    source: EditSource
    options: EditOptions
    start_timestep: int
    steps: int
    extra: dict = field(default_factory=dict)
    tokens: Any = None  # the final tokens (N,), for measurements
    source_tokens: Any = None  # the source's tokens (N,) the edit started from
    decoded: Any = None  # the decoded image before paste-back (with the predicted context, if any)

    def record(self) -> dict:
        return {**self.source.record(), **self.options.record(), "start_timestep": self.start_timestep,
                "steps_run": self.steps, **self.extra}

