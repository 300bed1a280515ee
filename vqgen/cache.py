"""vqgen's view of the standard Hugging Face cache: where things live, what is complete, listing, removal.

The HF cache (`<HF_HUB_CACHE>/models--org--name/{blobs,refs,snapshots}`) is written only by
huggingface_hub, plus the refs and the pickle removal of hub.py, both in the layout huggingface_hub
itself writes. vqgen's own files live OUTSIDE it, in `vqgen_home()/models--org--name/`
(`$HF_HOME/vqgen/` by default): the Hub's tools (scan_cache_dir, `hf cache ls`, `hf cache rm`)
take every folder of the hub cache for a repo and report a foreign one as a corrupted cache.
  fp16-<commit>.json   the manifest of a finished fp16 download (paths and sizes), written last, so a
                       snapshot without it is never taken for complete;
  <commit>/            the fp32 model converted to safetensors, renamed into place only when whole.
Both belong to a snapshot of the hub cache: once that snapshot is gone (`hf cache rm`), they are
garbage, and the next run deletes them. Older vqgen versions kept them in `<HF_HUB_CACHE>/vqgen/`;
they are moved on first use. Beside the repos, `converted/` holds a large transformer's weights
converted for a kernel mode (bfloat16, int8; written by converted.py), each file naming the weight
file it was made from: it goes once that file is gone or changed (prune_converted).
Nothing here imports torch or huggingface_hub: `vqgen models` answers at once.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .layout import PIPELINE_CLASS

COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _truthy(value: str | None) -> bool:
    # The same spellings huggingface_hub accepts for its boolean variables.
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _env_path(value: str) -> Path:
    return Path(os.path.expandvars(value)).expanduser()


def _explicit_hub_cache() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")


def hf_home() -> Path:
    """$HF_HOME, else huggingface_hub's default ($XDG_CACHE_HOME or ~/.cache, then /huggingface)."""
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return _env_path(home)


def hub_cache() -> Path:
    """The cache folder, read from the environment now (huggingface_hub freezes it at import time,
    which would ignore a variable set later in the same process)."""
    explicit = _explicit_hub_cache()
    return _env_path(explicit) if explicit else hf_home() / "hub"


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def vqgen_home(cache: Path | None = None) -> Path:
    """Where vqgen keeps its own files, never inside the hub cache `cache`:
    `$HF_HOME/vqgen` when HF_HOME is set or nothing is (the default, ~/.cache/huggingface/vqgen);
    with only HF_HUB_CACHE set, `vqgen` beside the hub cache folder (HF_HUB_CACHE=/big/hub gives
    /big/vqgen), so the conversions go to the disk the user chose for models. If the choice would
    still fall inside the hub cache (HF_HOME=HF_HUB_CACHE), the folder beside it is used."""
    cache = Path(cache or hub_cache())
    if os.environ.get("HF_HOME") or not _explicit_hub_cache():
        home = hf_home() / "vqgen"
    else:
        home = cache.parent / "vqgen"
    return cache.parent / "vqgen" if _inside(home, cache) else home


def env_offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def repo_folder_name(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / repo_folder_name(repo_id)


def snapshot_dir(cache: Path, repo_id: str, commit: str) -> Path:
    return repo_dir(cache, repo_id) / "snapshots" / commit


def vqgen_dir(cache: Path, repo_id: str) -> Path:
    return vqgen_root(cache) / repo_folder_name(repo_id)


# ---------------------------------------------------------------------------------------------
# vqgen's own folder: moving an old one out of the hub cache, dropping what `hf cache rm` orphaned
# ---------------------------------------------------------------------------------------------

_tidied: set[tuple[str, str]] = set()


def vqgen_root(cache: Path) -> Path:
    """vqgen_home(cache), tidied once per process (see tidy)."""
    root = vqgen_home(cache)
    key = (str(cache), str(root))
    if key not in _tidied:
        _tidied.add(key)
        tidy(cache, root)
    return root


OWNER = "hub-cache"  # a file in vqgen_home naming the hub cache its entries belong to


def tidy(cache: Path, root: Path) -> None:
    """Move an old `<cache>/vqgen/` (where older vqgen kept its files) to `root`, then delete the
    entries of `root` whose snapshot is gone from the hub cache. Best effort: what cannot be done now (a
    read-only cache) is tried again on the next run, and never stops this one."""
    try:
        _migrate(cache / "vqgen", root)
    except OSError:
        pass
    try:
        if _owned_by(root, cache):
            _drop_orphans(cache, root)
    except OSError:
        pass


def _owned_by(root: Path, cache: Path) -> bool:
    """Whether `root`'s entries belong to `cache`. One vqgen_home can serve two hub caches (HF_HOME
    set, HF_HUB_CACHE pointed elsewhere for one run): a snapshot missing from this cache may then
    be in the other one, so orphans are dropped only by the cache that first used the folder."""
    if not root.is_dir():
        return False
    me = os.path.abspath(cache)
    try:
        return (root / OWNER).read_text().strip() == me
    except FileNotFoundError:
        atomic_write_text(root / OWNER, me + "\n")
        return True


def _move(src: Path, dst: Path) -> None:
    """Move a file or folder to `dst` (which must not exist), atomically on one filesystem. Across
    filesystems: copy under a temporary name beside `dst`, rename it into place, then delete the
    source, so `dst` is either absent or whole."""
    try:
        os.rename(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    tmp = dst.with_name(f".{dst.name}.moving-{os.getpid()}")
    _rmtree(tmp)
    try:
        if src.is_dir():
            shutil.copytree(src, tmp, symlinks=True)
        else:
            shutil.copy2(src, tmp)
        os.rename(tmp, dst)
    finally:
        _rmtree(tmp)
    _rmtree(src)


def _migrate(old: Path, root: Path) -> None:
    """Entry by entry (a manifest, a converted commit): each is complete by construction, so moving
    them one at a time never makes anything look complete that is not. Where both places hold an
    entry, the new one wins. Temporary leftovers (hidden names) of interrupted runs are dropped."""
    if not old.is_dir() or _inside(root, old) or _inside(old, root):
        return
    for repo in sorted(old.iterdir()):
        if not repo.is_dir() or repo.name.startswith("."):
            _rmtree(repo)
            continue
        (root / repo.name).mkdir(parents=True, exist_ok=True)
        for entry in sorted(repo.iterdir()):
            target = root / repo.name / entry.name
            try:
                if entry.name.startswith(".") or target.exists():
                    _rmtree(entry)
                else:
                    _move(entry, target)
            except FileNotFoundError:  # another process moved it first
                pass
        repo.rmdir()
    old.rmdir()


def _entry_commit(entry: Path) -> str | None:
    name = entry.name.removeprefix("fp16-").removesuffix(".json")
    return name if COMMIT.match(name) else None


def _drop_orphans(cache: Path, root: Path) -> None:
    """A manifest or conversion whose snapshot is no longer in the hub cache was removed with the
    Hub's own tools (`hf cache rm`, which cannot see vqgen's folder): delete it too, so that the
    space is freed and the model no longer counts as cached. Only ever follows a removal: vqgen
    writes its entries after huggingface_hub created the snapshot."""
    if not root.is_dir():
        return
    for rdir in root.glob("models--*"):
        for entry in rdir.iterdir():
            commit = _entry_commit(entry)
            if commit and not (cache / rdir.name / "snapshots" / commit).is_dir():
                _rmtree(entry)
        if not any(rdir.iterdir()):
            rdir.rmdir()


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
    vqgen_root(cache)  # tidied first: an old folder moved, orphans of `hf cache rm` gone
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


# ---------------------------------------------------------------------------------------------
# The converted transformer weights (written and read by converted.py; listed and pruned here,
# without torch, for `vqgen models`)
# ---------------------------------------------------------------------------------------------

_STALE_TMP_SECONDS = 24 * 3600  # a temporary file this old belongs to a writer that died


def converted_weights_dir() -> Path:
    return vqgen_home() / "converted"


def safetensors_metadata(path: Path) -> dict:
    """The __metadata__ of a safetensors file's header ({} if it has none); OSError/ValueError if unreadable."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if size > 100 << 20:
            raise ValueError("header too large")
        meta = json.loads(f.read(size)).get("__metadata__")
    return meta if isinstance(meta, dict) else {}


def converted_entries() -> list[Path]:
    folder = converted_weights_dir()
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def prune_converted(keep: Path | None = None, format_version: str | None = None) -> None:
    """Delete converted weights whose weight file is gone or changed (its model was removed or
    updated), those of another format version when one is given, and temporary files of writers
    that died. Best effort: what cannot be read or deleted now is left for the next time."""
    folder = converted_weights_dir()
    if not folder.is_dir():
        return
    now = time.time()
    for entry in folder.iterdir():
        try:
            if entry.name.startswith("."):
                if now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                    entry.unlink()
                continue
            if entry == keep or entry.suffix != ".safetensors":
                continue
            meta = safetensors_metadata(entry)
            source = Path(meta.get("source") or "")
            stat = source.stat() if source.is_absolute() and source.is_file() else None
            if ((format_version is not None and meta.get("vqgen_converted") != format_version) or stat is None
                    or str(stat.st_size) != meta.get("size") or str(stat.st_mtime_ns) != meta.get("mtime_ns")):
                entry.unlink()
        except (OSError, ValueError):
            continue
