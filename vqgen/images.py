"""Writing images: safe names from prompts, paths for -n images, and atomic saves.

A file is written under a temporary name in its final folder and renamed into place, so an
interrupted run never leaves a half-written image under a real name.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from pathlib import Path

from . import defaults
from .errors import UsageError

IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def slugify(text: str, max_chars: int = defaults.SLUG_MAX_CHARS) -> str:
    """A short, safe file-name stem from a prompt: ASCII letters, digits and dashes only, so a
    prompt can never name a folder, a hidden file or a device."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_chars].rstrip("-") or "image"


def output_paths(output: str | None, prompt: str, count: int) -> list[Path]:
    """-o FILE (or a name from the prompt); with count > 1, FILE-0.png, FILE-1.png, ..."""
    path = Path(output).expanduser() if output else Path(slugify(prompt) + ".png")
    if path.is_dir():
        raise UsageError(f"output {str(path)!r} is a folder; give a file name such as {str(path / 'image.png')!r}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        if path.suffix:
            raise UsageError(f"output {str(path)!r} has an unknown image type; end it in .png (or .jpg, .webp)")
        path = path.with_suffix(".png")
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(count)]


def ensure_folder(folder: Path, what: str = "output folder") -> None:
    """Create `folder` (and its parents) and check we can write there, before any work."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{what} {str(folder)!r} is a file, not a folder; choose another")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {what} {str(folder)!r} ({e.strerror}); choose another") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {what} {str(folder)!r} (permission denied); choose another")


def prepare_folder(path: Path) -> None:
    """Create the parent folders of an output file and check we can write there, before any work."""
    if path.is_dir():
        raise UsageError(f"output {str(path)!r} is a folder; give a file name such as {str(path / 'image.png')!r}")
    ensure_folder(path.parent)


def save_atomic(image, path: Path, pnginfo=None) -> Path:
    """Save a PIL image to path via a temporary file in the same folder and a rename."""
    fmt = IMAGE_SUFFIXES[path.suffix.lower()]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format=fmt, **({"pnginfo": pnginfo} if pnginfo is not None and fmt == "PNG" else {}))
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def free_path(path: Path) -> Path:
    """path itself when nothing is there, else the first free NAME-1.png, NAME-2.png, ..."""
    if not path.exists():
        return path
    i = 1
    while (candidate := path.with_name(f"{path.stem}-{i}{path.suffix}")).exists():
        i += 1
    return candidate


def contact_sheet(images: list, columns: int | None = None):
    """The images side by side in a near-square grid, with a 2-pixel white gutter."""
    from PIL import Image

    columns = columns or max(1, round(len(images) ** 0.5 + 0.49))
    rows = -(-len(images) // columns)
    w, h = images[0].size
    gap = 2
    sheet = Image.new("RGB", (columns * w + (columns - 1) * gap, rows * h + (rows - 1) * gap), "white")
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * (w + gap), (i // columns) * (h + gap)))
    return sheet
