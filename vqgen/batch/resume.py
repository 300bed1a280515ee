"""Which images of a job list already exist, so a re-run only makes the rest.

An image counts as done when its file opens as a valid PNG and its embedded vqgen record says it
was made from the same prompt, seed and settings. Files are only ever renamed into place whole
(images.save_atomic), so a broken file is not ours and is simply made again; a whole file made
with other settings is the user's and is never overwritten.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..metadata import read_record

# Record fields that decide the pixels (besides the model), compared on resume.
COMPARED = ("prompt", "seed", "steps", "guidance", "truncation", "schedule", "sampler")


def _sha256(path: str | None, cache: dict = {}) -> str | None:  # noqa: B006 - a per-process cache of file hashes
    if path is None:
        return None
    if path not in cache:
        import hashlib

        try:
            cache[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            cache[path] = None
    return cache[path]


def expected_edit(job) -> dict | None:
    """What an edit's record must say: the same source and mask files (by SHA-256), the same strength."""
    if job.image is None:
        return None
    return {"image_sha256": _sha256(job.image), "mask_sha256": _sha256(job.mask), "strength": job.strength}


def expected_record(job, settings, num_timesteps: int) -> dict:
    return {
        "edit": expected_edit(job),
        "prompt": job.prompt,
        "seed": job.seed,
        "steps": job.steps or num_timesteps,
        "guidance": job.guidance,
        "truncation": job.truncation,
        "schedule": settings.schedule,
        "sampler": settings.sampler,
    }


def state(path: Path, expected: dict) -> tuple[str, dict | None]:
    """("missing" | "broken" | "done" | "different", the file's record)."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        return "missing", None
    try:
        with Image.open(path) as image:
            image.verify()  # chunk CRCs and structure, without decoding every pixel
        record = read_record(path)
    except (OSError, SyntaxError, UnidentifiedImageError, ValueError):
        return "broken", None
    if record is None:
        return "different", None
    same = all(record.get(k) == v for k, v in expected.items() if k in COMPARED) and _same_edit(record, expected)
    return ("done" if same else "different"), record


def _same_edit(record: dict, expected: dict) -> bool:
    want, have = expected.get("edit"), record.get("edit")
    if want is None or have is None:
        return want is None and have is None
    return all(have.get(k) == v for k, v in want.items())


def different_error(path: Path, record: dict | None, expected: dict) -> UsageError:
    if record is None:
        why = "it has no vqgen record"
    else:
        key = next((k for k in COMPARED if record.get(k) != expected.get(k)), None)
        if key is None:
            why = "it was made from another source image, mask or strength" if expected.get("edit") else "it is an edit"
        else:
            why = f"its {key} is {record.get(key)!r}, this run's is {expected.get(key)!r}"
    return UsageError(f"{str(path)!r} already exists but was not made by this run ({why}); "
                      f"use another OUTDIR, or the same options and --seed as the run that made it")


def plan(jobs, outdir: Path, settings, num_timesteps: int):
    """(jobs still to do, [(job, record)] of finished ones); UsageError when a file under a job's
    name holds another image. Needs only the model's chain length, so it runs before the load."""
    todo, done = [], []
    for job in jobs:
        expected = expected_record(job, settings, num_timesteps)
        path = outdir / job.name
        found, record = state(path, expected)
        if found == "different":
            raise different_error(path, record, expected)
        if found == "done":
            done.append((job, record))
        else:
            todo.append(job)
    return todo, done
