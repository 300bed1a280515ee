"""OUTDIR/manifest.jsonl: one JSON object per line, one line per image written (or failed).

Several processes, on one machine or several sharing a file system, append to the same file. Each
line goes out in a single os.write on an O_APPEND descriptor while holding a POSIX lock on the
file: O_APPEND alone keeps local writers from interleaving, and the lock also covers NFS, where
O_APPEND is not atomic but lock/unlock revalidates the file size.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks; O_APPEND still keeps single-machine lines whole
    fcntl = None

NAME = "manifest.jsonl"
# save_atomic's temporary files: ".<final name>.<random>.tmp" in the final folder.
TEMP_FILE = re.compile(r"^\.(?P<name>.+\.png)\.[A-Za-z0-9_]+\.tmp$")


def append(path: Path, record: dict) -> None:
    data = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:  # a regular file takes it all at once; the loop is for the rare short write
            view = view[os.write(fd, view):]
        if fcntl is not None:
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def image_line(job, record: dict, base_seed: int) -> dict:
    """The manifest line of a written image: its metadata record plus where it sits in the run."""
    return {**record, "file": job.name, "index": job.index, "line": job.line, "base_seed": base_seed, "time": now()}


def error_line(job, steps: int, base_seed: int, message: str) -> dict:
    return {"file": job.name, "index": job.index, "line": job.line, "prompt": job.prompt, "seed": job.seed,
            "steps": steps, "guidance": job.guidance, "truncation": job.truncation, "base_seed": base_seed,
            "error": message, "time": now()}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read(path: Path) -> list[dict]:
    """Every well-formed line; a line cut short by a crash or edited by hand is skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in raw.split(b"\n"):
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def written_files(records: list[dict]) -> set[str]:
    return {r["file"] for r in records if isinstance(r.get("file"), str) and "error" not in r}


def last_base_seed(records: list[dict]) -> int | None:
    """The base seed of the latest run into this folder, so that a re-run without --seed resumes
    with the same seeds (and so the same file names) instead of starting over."""
    for record in reversed(records):
        if isinstance(record.get("base_seed"), int) and not isinstance(record["base_seed"], bool):
            return record["base_seed"]
    return None


def clean_temp_files(folder: Path, mine: set[str], everyone: set[str] | None) -> int:
    """Remove temporary files left by a killed run: those of our own jobs, and (when `everyone` is
    given, on one process only) those of names no job has. Never another process's current job."""
    removed = 0
    for entry in folder.iterdir():
        match = TEMP_FILE.match(entry.name)
        if not match:
            continue
        name = match["name"]
        if name in mine or (everyone is not None and name not in everyone):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed
