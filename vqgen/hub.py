"""Where a model reference points: a local folder, or a Hugging Face Hub repo in the cache.

A repo id is resolved to a commit (one API call, or the cache's refs when offline), then served
from the standard Hugging Face cache, downloading what is missing first:
- fp16 (default download): configs, tokenizer and `*.fp16.safetensors`, never a pickle; the path
  is the HF snapshot folder.
- fp32: the fp32 `.bin` pickles, converted once into safetensors (convert.py) in vqgen's own
  folder outside the hub cache, `$HF_HOME/vqgen/models--org--name/<commit>/` (cache.vqgen_home);
  the pickles are then dropped from the cache.
Files are fetched one by one with huggingface_hub.hf_hub_download (it writes the cache, resumes a
dropped connection with a Range request, and renames each blob into place only when whole); the
total size is known from the tree listing up front, so one download_started/download_advanced
series covers the whole download. Progress and notes go to the caller's Events (vqgen.events;
the default shows nothing): this module never prints.
torch and huggingface_hub are imported inside functions: `vqgen --help` stays instant.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import cache as hc
from .errors import DISK_FULL, CheckpointError, SettingError, UsageError, VqgenError
from .events import NO_EVENTS, Events
from .layout import PIPELINE_CLASS, ResolvedModel

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PRECISIONS = ("fp16", "fp32")
WEIGHT = re.compile(r"^(diffusion_pytorch_model|model|pytorch_model)(\.fp16)?\.(safetensors|bin)$")
KEEP_SUFFIXES = (".json", ".txt", ".model")  # configs, tokenizer files (vocab, merges, sentencepiece)


@dataclass
class Plan:
    """What a download of one commit at one precision takes."""

    repo_id: str
    revision: str | None
    commit: str
    precision: str
    sizes: dict[str, int]  # repo path -> bytes, the files this precision needs
    cached: set[str] = field(default_factory=set)  # those already in the snapshot
    done: bool = False  # nothing left to fetch or convert

    @property
    def missing(self) -> list[str]:
        # Small files first: configs and model_index.json land before the big weights.
        return sorted((f for f in self.sizes if f not in self.cached), key=lambda f: (self.sizes[f], f))

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    @property
    def to_fetch(self) -> int:
        return sum(self.sizes[f] for f in self.missing)


@dataclass(frozen=True)
class Outcome:
    resolved: ResolvedModel
    plan: Plan | None  # None when answered from the cache alone
    fetched: bool  # something was downloaded or converted


def looks_like_repo_id(model: str) -> bool:
    return bool(REPO_ID.match(model)) and not model.startswith((".", "/"))


def human(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def short(commit: str) -> str:
    return commit[:7]


def _endpoint() -> str:
    # Read now rather than from huggingface_hub.constants, which froze it at import time.
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _token() -> str | None:
    # None lets huggingface_hub fall back to the token saved by `hf auth login`.
    return os.environ.get("HF_TOKEN") or None


# ---------------------------------------------------------------------------------------------
# Errors: every failure of the Hub, the network or the disk becomes one line with its fix.
# ---------------------------------------------------------------------------------------------


def _rev_text(revision: str | None) -> str:
    return f" --revision {revision}" if revision else ""


@contextmanager
def hub_errors(repo_id: str, revision: str | None):
    import httpx2
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
        RepositoryNotFoundError, RevisionNotFoundError,
    )

    endpoint = _endpoint()
    try:
        yield
    except VqgenError:
        raise
    except GatedRepoError:
        raise CheckpointError(f"{repo_id} is gated: accept its terms on {endpoint}/{repo_id}, then set HF_TOKEN (or run `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{repo_id}: no such model on {endpoint} (or it is private); check the repo id, or set HF_TOKEN for a private repo") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{repo_id} has no revision {revision!r}; use a branch, tag or commit that exists (e.g. main)") from None
    except (httpx2.TransportError, OfflineModeIsEnabled, LocalEntryNotFoundError) as e:
        if isinstance(e, OfflineModeIsEnabled) or "offline" in str(e).lower():
            raise CheckpointError(f"{repo_id} is not in the cache and offline mode is on (HF_HUB_OFFLINE=1); run `vqgen download {repo_id}{_rev_text(revision)}` while online") from None
        reason = (str(e).splitlines() or [type(e).__name__])[0][:80] or type(e).__name__
        raise CheckpointError(f"cannot reach the Hub at {endpoint} ({reason}); check the network or HF_ENDPOINT, then run again (what was downloaded is kept)") from None
    except EntryNotFoundError as e:
        raise CheckpointError(f"{repo_id}: a file listed by the Hub is missing ({str(e).splitlines()[0][:100]}); try again later") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise CheckpointError(f"the Hub at {endpoint} answered HTTP {status} for {repo_id}; try again later (what was downloaded is kept)") from None
    except OSError as e:
        if e.errno in DISK_FULL:
            raise CheckpointError(f"disk full while downloading {repo_id} into {hc.hub_cache()}; free some space or set HF_HUB_CACHE to a bigger disk, then run again") from None
        raise CheckpointError(f"cannot write to the cache {hc.hub_cache()} ({e.strerror or e}); check its permissions or set HF_HUB_CACHE") from None


# ---------------------------------------------------------------------------------------------
# Talking to the Hub
# ---------------------------------------------------------------------------------------------


def _api():
    from huggingface_hub import HfApi

    from . import __version__

    return HfApi(endpoint=_endpoint(), token=_token(), library_name="vqgen", library_version=__version__)


def remote_commit(api, repo_id: str, revision: str | None) -> str:
    info = api.model_info(repo_id, revision=revision)
    if not info.sha:
        raise CheckpointError(f"{_endpoint()} did not name a commit for {repo_id}; check HF_ENDPOINT points to a Hugging Face Hub")
    return info.sha


def remote_files(api, repo_id: str, commit: str) -> dict[str, int]:
    from huggingface_hub.hf_api import RepoFile

    return {f.path: f.size for f in api.list_repo_tree(repo_id, recursive=True, revision=commit) if isinstance(f, RepoFile)}


def check_pipeline(repo_id: str, commit: str, tree: dict[str, int]) -> None:
    """Read model_index.json straight from the Hub (not into the cache): a repo that is not a
    VQ-Diffusion pipeline is refused before anything is written."""
    from huggingface_hub import get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    if "model_index.json" not in tree:
        raise CheckpointError(f"{repo_id} is not a diffusers pipeline (no model_index.json); vqgen runs VQ-Diffusion models such as microsoft/vq-diffusion-ithq")
    url = hf_hub_url(repo_id, "model_index.json", revision=commit, endpoint=_endpoint())
    response = get_session().get(url, headers=build_hf_headers(token=_token()), follow_redirects=True)
    hf_raise_for_status(response)
    try:
        cls = json.loads(response.content).get("_class_name")
    except (ValueError, AttributeError):
        cls = None
    if cls != PIPELINE_CLASS:
        raise CheckpointError(f"{repo_id} holds a {cls!r}, not a {PIPELINE_CLASS}; vqgen runs VQ-Diffusion models only")


def select_files(repo_id: str, tree: dict[str, int], precision: str) -> dict[str, int]:
    """The files one precision needs: every config and tokenizer file, plus one weight file per
    component folder: fp16 takes safetensors only (never a pickle); fp32 takes fp32 safetensors
    where they exist, else the fp32 pickle (converted afterwards)."""
    keep = {p: s for p, s in tree.items() if p.endswith(KEEP_SUFFIXES) and not WEIGHT.match(p.rsplit("/", 1)[-1])}
    folders: dict[str, set[str]] = {}
    for path in tree:
        folder, _, name = path.rpartition("/")
        if WEIGHT.match(name):
            folders.setdefault(folder, set()).add(name)
    for folder, names in sorted(folders.items()):
        if precision == "fp16":
            choice = ["diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors", "diffusion_pytorch_model.safetensors", "model.safetensors"]
            fix = "use --precision fp32 (converts the fp32 pickles to safetensors once)"
        else:
            choice = ["diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin", "pytorch_model.bin"]
            fix = "use --precision fp16"
        name = next((n for n in choice if n in names), None)
        if name is None:
            raise CheckpointError(f"{repo_id}: {folder or 'the root folder'} has no {precision} weights vqgen can use (found {', '.join(sorted(names))}); {fix}")
        keep[f"{folder}/{name}" if folder else name] = tree[f"{folder}/{name}" if folder else name]
    return dict(sorted(keep.items()))


def make_plan(repo_id: str, revision: str | None, precision: str, commit: str | None = None) -> Plan:
    api = _api()
    commit = commit or remote_commit(api, repo_id, revision)
    tree = remote_files(api, repo_id, commit)
    check_pipeline(repo_id, commit, tree)
    plan = Plan(repo_id, revision, commit, precision, select_files(repo_id, tree, precision))
    cache = hc.hub_cache()
    snap = hc.snapshot_dir(cache, repo_id, commit)
    if precision == "fp32" and hc.fp32_complete(cache, repo_id, commit):
        plan.cached, plan.done = set(plan.sizes), True
    else:
        plan.cached = {f for f, size in plan.sizes.items() if _has_file(snap / f, size)}
        plan.done = precision == "fp16" and not plan.missing and hc.fp16_complete(cache, repo_id, commit)
    return plan


def _has_file(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------


def _bar_class(events: Events):
    """A stand-in for the tqdm class huggingface_hub reports bytes to: every file's bytes go to the
    one download of `events` (totals come from the tree listing, so the per-file totals are ignored)."""

    class Bar:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n=1):
            events.download_advanced(n or 0)  # negative when a server ignored Range and the file restarts

        def close(self):
            pass

        def set_description(self, *args, **kwargs):
            pass

        set_postfix_str = set_description_str = refresh = set_description

    return Bar


def _check_space(needs: list[tuple[Path, int, str]], repo_id: str) -> None:
    """needs: (folder, bytes, the variable that moves it). Folders on one disk add up (the hub
    cache and vqgen's folder are usually on the same one)."""
    disks: dict[int, list] = {}
    for folder, need, variable in needs:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            disk = disks.setdefault(os.stat(probe).st_dev, [probe, folder, 0, variable])
        except OSError:
            continue
        disk[2] += need
    for probe, folder, need, variable in disks.values():
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            continue
        if need > free:
            raise CheckpointError(f"not enough disk space for {repo_id}: it needs {human(need)} in {folder}, {human(free)} is free; free some space or set {variable} to a bigger disk")


def fetch(plan: Plan, events: Events = NO_EVENTS) -> None:
    """Download what the plan lacks, then record completion (manifest, or the converted folder)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import logging as hf_logging

    from . import __version__

    cache = hc.hub_cache()
    bins = [f for f in plan.sizes if f.endswith(".bin")] if plan.precision == "fp32" else []
    # The conversion writes as much again as the pickles, into vqgen's folder.
    _check_space([(cache, plan.to_fetch, "HF_HUB_CACHE"), (hc.vqgen_home(cache), sum(plan.sizes[f] for f in bins), "HF_HOME")], plan.repo_id)
    # huggingface_hub logs each retry as a multi-line warning; the bar and our one-line errors say enough.
    hf_logging.set_verbosity_error()
    with hub_errors(plan.repo_id, plan.revision):
        if plan.missing:
            events.download_started(f"{plan.repo_id} ({plan.precision})", plan.to_fetch)
            try:
                bar = _bar_class(events)
                for rel in plan.missing:
                    hf_hub_download(plan.repo_id, rel, revision=plan.commit, cache_dir=str(cache), endpoint=_endpoint(),
                                    token=_token(), tqdm_class=bar, library_name="vqgen", library_version=__version__)
            finally:
                events.download_finished()
        if plan.revision:
            hc.write_ref(cache, plan.repo_id, plan.revision, plan.commit)
        else:
            hc.write_ref(cache, plan.repo_id, "main", plan.commit)
        if plan.precision == "fp16":
            hc.write_manifest(cache, plan.repo_id, plan.commit, plan.sizes)
            return
    convert(plan, events)


def convert(plan: Plan, events: Events = NO_EVENTS) -> None:
    from .convert import convert_snapshot

    cache = hc.hub_cache()
    snap = hc.snapshot_dir(cache, plan.repo_id, plan.commit)

    def on_component(component: str, size: int) -> None:
        events.message(f"converting {component} ({human(size)}) to safetensors")

    events.task_started(f"converting {plan.repo_id} to safetensors")
    try:
        convert_snapshot(snap, list(plan.sizes), hc.converted_dir(cache, plan.repo_id, plan.commit), on_component)
    finally:
        events.task_finished()
    freed = drop_pickles(cache, plan.repo_id, plan.commit, [f for f in plan.sizes if f.endswith(".bin")])
    if freed:
        events.message(f"removed the converted pickles from the cache ({human(freed)} freed); later runs read the safetensors")


def drop_pickles(cache: Path, repo_id: str, commit: str, bins: list[str]) -> int:
    """After a verified conversion the pickles are dead weight (as big as the model itself):
    unlink them from the snapshot, and their blobs where no other snapshot uses them."""
    snaps = hc.repo_dir(cache, repo_id) / "snapshots"
    freed = 0
    for rel in bins:
        pointer = snaps / commit / rel
        blob = Path(os.path.realpath(pointer))
        pointer.unlink(missing_ok=True)
        still_used = any(os.path.realpath(p) == str(blob) for p in snaps.rglob(Path(rel).name) if p.is_symlink())
        if blob.is_file() and not still_used and blob != pointer:
            freed += blob.stat().st_size
            blob.unlink()
    return freed


# ---------------------------------------------------------------------------------------------
# The entry points: `vqgen download` and `--model REPO_ID`
# ---------------------------------------------------------------------------------------------


def _resolved(repo_id: str, revision: str | None, commit: str, precision: str) -> ResolvedModel:
    cache = hc.hub_cache()
    path = hc.converted_dir(cache, repo_id, commit) if precision == "fp32" else hc.snapshot_dir(cache, repo_id, commit)
    return ResolvedModel(path=path, name=repo_id, repo_id=repo_id, revision=revision, commit=commit, precision=precision)


def from_cache(repo_id: str, revision: str | None, precision: str | None, commit: str | None = None) -> ResolvedModel | None:
    """A complete cached copy, without the network: fp32 first (when no precision is asked), as the
    user took the trouble to convert it."""
    cache = hc.hub_cache()
    commit = commit or hc.cached_commit(cache, repo_id, revision)
    if commit is None:
        return None
    for p in [precision] if precision else ["fp32", "fp16"]:
        done = hc.fp32_complete if p == "fp32" else hc.fp16_complete
        if done(cache, repo_id, commit):
            return _resolved(repo_id, revision, commit, p)
    return None


def ensure(repo_id: str, *, revision: str | None = None, precision: str | None = None, offline: bool | None = None,
           events: Events | None = None, dry_run: bool = False, for_generate: bool = False) -> Outcome:
    """Resolve, and download/convert what is missing. precision None: whatever complete copy is
    cached (fp32 first), else fp16. events: where notes and download progress go (default: nowhere)."""
    events = events or NO_EVENTS
    if not looks_like_repo_id(repo_id):
        raise UsageError(f"{repo_id!r} is not a Hub repo id; use the form org/name, e.g. microsoft/vq-diffusion-ithq")
    if precision not in (None, *PRECISIONS):
        raise SettingError("precision", precision, "fp16 or fp32", "{name} {value} is not known; use fp16 or fp32")
    offline = hc.env_offline() if offline is None else offline
    if offline:
        if dry_run:
            raise SettingError("dry_run", True, "False while offline", "{name} asks the Hub for the file list, but offline mode is on; unset HF_HUB_OFFLINE")
        cached = from_cache(repo_id, revision, precision)
        if cached is None:
            want = f"{repo_id}" + (f" at {revision}" if revision else "") + (f" ({precision})" if precision else "")
            fix = f"vqgen download {repo_id}{_rev_text(revision)}" + (" --precision fp32" if precision == "fp32" else "")
            raise CheckpointError(f"{want} is not in the cache ({hc.hub_cache()}) and offline mode is on; run `{fix}` while online")
        return Outcome(cached, None, False)

    try:
        with hub_errors(repo_id, revision):
            commit = remote_commit(_api(), repo_id, revision)
    except CheckpointError as e:
        # The Hub is unreachable: a complete cached copy still works, as with huggingface_hub itself.
        cached = None if dry_run or "cannot reach" not in str(e) else from_cache(repo_id, revision, precision)
        if cached is None:
            raise
        events.message(f"the Hub is unreachable; using the cached {repo_id} (commit {short(cached.commit)}, {cached.precision})")
        return Outcome(cached, None, False)

    if not dry_run:
        cached = from_cache(repo_id, revision, precision, commit)
        if cached is not None:
            hc.write_ref(hc.hub_cache(), repo_id, revision or "main", commit)
            return Outcome(cached, None, False)
    with hub_errors(repo_id, revision):
        plan = make_plan(repo_id, revision, precision or "fp16", commit)
    if dry_run or plan.done:
        return Outcome(_resolved(repo_id, revision, commit, plan.precision), plan, False)
    if for_generate:
        events.message(f"{repo_id} is not in the cache: downloading {human(plan.to_fetch)} ({plan.precision}, {len(plan.missing)} files, "
                       f"commit {short(commit)}) into {hc.hub_cache()}")
    fetch(plan, events)
    return Outcome(_resolved(repo_id, revision, commit, plan.precision), plan, True)


def resolve_model(model: str, *, revision: str | None = None, precision: str | None = None,
                  offline: bool | None = None, events: Events | None = None) -> ResolvedModel:
    """A local folder for `model`: the folder itself when it exists on disk, a model bundled with
    vqgen (`shapes`), else a Hub repo id
    resolved through the cache (downloading first when needed, with a size notice and progress
    through `events`)."""
    from .bundled import bundled_model_path

    path = Path(model).expanduser()
    if path.exists() or not looks_like_repo_id(model):
        bundled = None if path.exists() else bundled_model_path(model)
        return ResolvedModel(path=bundled or path, name=model)
    return ensure(model, revision=revision, precision=precision, offline=offline, events=events, for_generate=True).resolved
