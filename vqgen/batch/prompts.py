"""Prompt files: plain text (one prompt a line) or JSON Lines (one object a line).

Blank lines and lines starting with `#` are skipped in both. The format is decided once per file
by its first real line (`{` means JSON Lines), not per line, so a plain prompt that happens to
start with a brace in the middle of a text file is still a prompt. Every problem is reported with
its line number, before any model is loaded. A line's settings are checked by the same rules as
the command line's (settings.check); against the model's chain once it is known (cli/batch.py).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import SettingError, UsageError
from ..settings import check

# Per-line keys a JSON Lines prompt file may use; anything else is a typo we would rather report.
KEYS = ("prompt", "seed", "steps", "guidance", "truncation", "n", "image", "mask", "strength")
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit value; keep seed + i inside it
MAX_IMAGES_PER_LINE = 100_000


@dataclass(frozen=True)
class PromptLine:
    line: int  # 1-based line number in the file, for messages
    prompt: str
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    truncation: float | None = None
    n: int | None = None
    image: str | None = None  # an edit (vqgen edit): the source image, its path resolved against the prompt file's folder
    mask: str | None = None  # and its mask (none: a variation)
    strength: float | None = None


def read_source(source: str) -> bytes:
    """The raw bytes of PROMPTS: a file, or `-` for stdin."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UsageError(f"prompt file {source!r} does not exist; give a text file with one prompt per line (or - for stdin)") from None
    except IsADirectoryError:
        raise UsageError(f"prompt file {source!r} is a folder; give a text file with one prompt per line") from None
    except OSError as e:
        raise UsageError(f"cannot read prompt file {source!r} ({e.strerror})") from None


def parse(data: bytes, name: str = "prompts", folder: str | Path | None = None) -> list[PromptLine]:
    """All prompt lines of a file's bytes; UsageError naming the first bad line. A line's "image"
    and "mask" paths are relative to `folder` (the prompt file's; None: the current folder)."""
    if data.startswith(b"\xef\xbb\xbf"):  # a BOM, as Windows editors write
        data = data[3:]
    entries: list[tuple[int, str]] = []
    # split on \n only: str.splitlines would also split on form feeds and Unicode separators
    # inside a prompt, and shift every later line number.
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            raise UsageError(f"{name}:{number}: not valid UTF-8 (byte {e.start + 1}); save the file as UTF-8") from None
        stripped = text.strip()
        if stripped and not stripped.startswith("#"):
            entries.append((number, stripped))
    if not entries:
        raise UsageError(f"{name} has no prompts (blank lines and lines starting with # are skipped)")
    as_json = entries[0][1].startswith("{")
    base = Path(folder) if folder is not None else Path(".")
    lines = [_json_line(n, t, name, base) if as_json else _text_line(n, t, name) for n, t in entries]
    return lines


def _text_line(number: int, text: str, name: str) -> PromptLine:
    if "\x00" in text:
        raise UsageError(f"{name}:{number}: contains a NUL character; is this a text file?")
    return PromptLine(number, text)


def _json_line(number: int, text: str, name: str, base: Path = Path(".")) -> PromptLine:
    where = f"{name}:{number}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); the file is JSON Lines because its first prompt line starts with {{") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object such as {{\"prompt\": \"a red bus\"}}")
    unknown = sorted(set(obj) - set(KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(KEYS)}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError(f"{where}: \"prompt\" must be a non-empty string")
    if "\x00" in prompt:
        raise UsageError(f"{where}: \"prompt\" contains a NUL character")
    seed = _int(obj, "seed", where, 0, MAX_SEED)
    steps = _int(obj, "steps", where, None, None)
    n = _int(obj, "n", where, 1, MAX_IMAGES_PER_LINE)
    guidance = _number(obj, "guidance", where)
    truncation = _number(obj, "truncation", where)
    for key, value in (("steps", steps), ("guidance", guidance), ("truncation", truncation)):
        check_line_setting(where, key, value)
    if seed is not None and n is not None and seed + n - 1 > MAX_SEED:
        raise UsageError(f"{where}: seed {seed} + n is too large; use a seed below {MAX_SEED - n + 1}")
    image, mask = (_path(obj, key, where, base) for key in ("image", "mask"))
    strength = _number(obj, "strength", where)
    if image is None and (mask is not None or strength is not None):
        raise UsageError(f"{where}: \"{'mask' if mask is not None else 'strength'}\" needs \"image\", the image to edit")
    check_line_setting(where, "strength", strength)
    return PromptLine(number, prompt.strip(), seed, steps, guidance, truncation, n, image, mask, strength)


def _path(obj: dict, key: str, where: str, base: Path) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise UsageError(f"{where}: \"{key}\" must be a file path (relative to the prompt file's folder), not {json.dumps(value)}")
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def check_edit_files(lines: list[PromptLine], name: str) -> None:
    """Every line's "image" and "mask" opened and checked (an image, not too large; a mask with
    something to repaint) before any model loads; UsageError naming the line."""
    from ..editing import open_image, read_mask

    seen: dict = {}
    for line in lines:
        if line.image is None or (line.image, line.mask) in seen:
            continue
        where = f"{name}:{line.line}"
        try:
            image, _ = open_image(line.image, "image")
            if line.mask is not None:
                mask, _ = open_image(line.mask, "mask")
                read_mask(mask, repr(line.mask), image.size)
        except UsageError as e:
            raise UsageError(f"{where}: {e}") from None
        seen[(line.image, line.mask)] = True


def check_line_setting(where: str, key: str, value, chain=None) -> None:
    """settings.check for a line's value (its JSON key is the setting's name), as "file:line: ..."."""
    try:
        check(key, value, chain)
    except SettingError as e:
        raise UsageError(f"{where}: {e}") from None


def _int(obj: dict, key: str, where: str, low: int | None, high: int | None) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    # bool is an int in Python, and 5.0 would silently become 5: both are reported instead.
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{where}: \"{key}\" must be a whole number, not {json.dumps(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f"at least {low}"
        raise UsageError(f"{where}: \"{key}\" {value} is out of range; use {bound}")
    return value


def _number(obj: dict, key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}: \"{key}\" must be a number, not {json.dumps(value)}")
    if not math.isfinite(value):  # json.loads accepts NaN and Infinity
        raise UsageError(f"{where}: \"{key}\" must be a finite number")
    return float(value)
