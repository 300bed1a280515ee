"""vqgen's view of the standard Hugging Face cache: where things live, what is complete, listing, removal.

The HF cache (`<HF_HUB_CACHE>/models--org--name/{blobs,refs,snapshots}`) is written only by
huggingface_hub. vqgen adds one folder beside the repos, `<HF_HUB_CACHE>/vqgen/models--org--name/`:
  fp16-<commit>.json   the manifest of a finished fp16 download (paths and sizes), written last, so a
                       snapshot without it is never taken for complete;
  <commit>/            the fp32 model converted to safetensors, renamed into place only when whole.
Nothing here imports torch or huggingface_hub: `vqgen models` answers at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

PIPELINE_CLASS = "VQDiffusionPipeline"
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _truthy(value: str | None) -> bool:
    # The same spellings huggingface_hub accepts for its boolean variables.
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache() -> Path:
    """The cache folder, read from the environment now (huggingface_hub freezes it at import time,
    which would ignore a variable set later in the same process)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def env_offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def repo_folder_name(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / repo_folder_name(repo_id)


def snapshot_dir(cache: Path, repo_id: str, commit: str) -> Path:
    return repo_dir(cache, repo_id) / "snapshots" / commit


def vqgen_dir(cache: Path, repo_id: str) -> Path:
    return cache / "vqgen" / repo_folder_name(repo_id)


def converted_dir(cache: Path, repo_id: str, commit: str) -> Path:
    return vqgen_dir(cache, repo_id) / commit


def manifest_path(cache: Path, repo_id: str, commit: str) -> Path:
    return vqgen_dir(cache, repo_id) / f"fp16-{commit}.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write then rename: a reader sees the old file or the whole new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_manifest(cache: Path, repo_id: str, commit: str, files: dict[str, int]) -> None:
    atomic_write_text(manifest_path(cache, repo_id, commit), json.dumps({"repo_id": repo_id, "commit": commit, "files": files}, indent=1))


def read_manifest(cache: Path, repo_id: str, commit: str) -> dict[str, int] | None:
    try:
        return json.loads(manifest_path(cache, repo_id, commit).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fp16_complete(cache: Path, repo_id: str, commit: str) -> bool:
    """The manifest exists and every file it lists is in the snapshot with its size (a blob deleted
    behind our back, e.g. by `hf cache delete`, makes it incomplete again)."""
    files = read_manifest(cache, repo_id, commit)
    if not files:
        return False
    snap = snapshot_dir(cache, repo_id, commit)
    for rel, size in files.items():
        try:
            if (snap / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def fp32_complete(cache: Path, repo_id: str, commit: str) -> bool:
    return (converted_dir(cache, repo_id, commit) / "model_index.json").is_file()


def write_ref(cache: Path, repo_id: str, revision: str, commit: str) -> None:
    """refs/<branch or tag> -> commit, as huggingface_hub itself records it (used offline)."""
    if revision == commit:
        return
    ref = repo_dir(cache, repo_id) / "refs" / revision
    try:
        if ref.read_text() == commit:
            return
    except OSError:
        pass
    atomic_write_text(ref, commit)


def cached_commit(cache: Path, repo_id: str, revision: str | None) -> str | None:
    """The commit a revision names, from the cache alone: a full hash as is, a branch or tag via refs."""
    revision = revision or "main"
    if COMMIT.match(revision):
        return revision
    try:
        commit = (repo_dir(cache, repo_id) / "refs" / revision).read_text().strip()
    except OSError:
        return None
    return commit if COMMIT.match(commit) else None


# ---------------------------------------------------------------------------------------------
# Listing and removal
# ---------------------------------------------------------------------------------------------


@dataclass
class CachedModel:
    repo_id: str
    commit: str
    refs: list[str]
    precision: str  # "fp16", "fp32", "fp16+fp32" or "partial"
    size: int  # bytes on disk that belong to this commit (shared blobs counted for each commit)


def _tree_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            pass
    return total


def _is_vq_pipeline(snapshot: Path) -> bool:
    try:
        return json.loads((snapshot / "model_index.json").read_text()).get("_class_name") == PIPELINE_CLASS
    except (OSError, ValueError, AttributeError):
        return False


def list_models(cache: Path | None = None) -> list[CachedModel]:
    """Every cached commit of a VQ-Diffusion pipeline, sorted by repo."""
    cache = cache or hub_cache()
    found = []
    for rdir in sorted(cache.glob("models--*--*")):
        repo_id = rdir.name.removeprefix("models--").replace("--", "/", 1)
        refs: dict[str, list[str]] = {}
        for ref in sorted((rdir / "refs").rglob("*")) if (rdir / "refs").is_dir() else []:
            if ref.is_file():
                refs.setdefault(ref.read_text().strip(), []).append(ref.relative_to(rdir / "refs").as_posix())
        commits = {p.name for p in (rdir / "snapshots").glob("*") if COMMIT.match(p.name)}
        commits |= {p.name for p in vqgen_dir(cache, repo_id).glob("*") if COMMIT.match(p.name)}
        for commit in sorted(commits):
            snap, conv = snapshot_dir(cache, repo_id, commit), converted_dir(cache, repo_id, commit)
            if not (_is_vq_pipeline(snap) or _is_vq_pipeline(conv)):
                continue
            kinds = [k for k, done in (("fp16", fp16_complete(cache, repo_id, commit)), ("fp32", fp32_complete(cache, repo_id, commit))) if done]
            size = (_tree_size(snap) if snap.is_dir() else 0) + (_tree_size(conv) if conv.is_dir() else 0)
            found.append(CachedModel(repo_id, commit, refs.get(commit, []), "+".join(kinds) or "partial", size))
    return found


def _rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


def remove_commit(cache: Path, repo_id: str, commit: str) -> None:
    """Delete one commit: completeness markers first (so an interruption never leaves something that
    looks complete), then the snapshot, its refs, and every blob no other snapshot still uses."""
    rdir = repo_dir(cache, repo_id)
    manifest_path(cache, repo_id, commit).unlink(missing_ok=True)
    _rmtree(converted_dir(cache, repo_id, commit))
    _rmtree(rdir / "snapshots" / commit)
    _rmtree(rdir / ".no_exist" / commit)
    for ref in list((rdir / "refs").rglob("*")) if (rdir / "refs").is_dir() else []:
        if ref.is_file() and ref.read_text().strip() == commit:
            ref.unlink()
    remaining = [p for p in (rdir / "snapshots").glob("*")] if (rdir / "snapshots").is_dir() else []
    if not remaining:
        _rmtree(rdir)
        _rmtree(vqgen_dir(cache, repo_id))
        return
    used = {os.path.realpath(p) for snap in remaining for p in snap.rglob("*") if p.is_symlink()}
    for blob in (rdir / "blobs").glob("*") if (rdir / "blobs").is_dir() else []:
        if os.path.realpath(blob) not in used:
            blob.unlink()
