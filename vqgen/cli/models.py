"""`vqgen models`: the VQ-Diffusion models in the Hugging Face cache; `--remove REPO_ID` deletes one."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from ..errors import UsageError
from . import app
from .progress import say


@app.command()
def models(
    remove: Optional[str] = typer.Option(None, "--remove", metavar="REPO_ID", help="Delete this repo from the cache (every cached commit, or only --revision)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="With --remove: only this branch, tag or commit (a prefix of 7+ hex digits is enough)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="With --remove: do not ask for confirmation."),
) -> None:
    """List the cached VQ-Diffusion models, or remove one with --remove REPO_ID.

    Columns: repo, revision (branches/tags), commit, precision (fp16, fp32, or partial for an
    unfinished download) and size. `vqgen models --remove REPO_ID [--revision REV] [--yes]` deletes
    a repo (or one revision of it) from the cache, blobs and vqgen's conversions included. The
    cache is HF_HUB_CACHE (default HF_HOME/hub); vqgen's own files are in HF_HOME/vqgen.
    """
    from ..cache import converted_entries, converted_weights_dir, hub_cache, list_models, prune_converted, remove_commit
    from ..hub import human, short

    cache = hub_cache()
    found = list_models(cache)
    prune_converted()  # converted weights of a model removed with the Hub's own tools
    if remove is None:
        if revision or yes:
            raise UsageError("--revision and --yes go with --remove REPO_ID")
        entries = converted_entries()
        if entries:
            size = sum(e.stat().st_size for e in entries)
            say(f"converted weights (bfloat16 / int8 copies made at load): {len(entries)} file(s), {human(size)} in "
                f"{converted_weights_dir()}; made again when deleted")
        if not found:
            say(f"no VQ-Diffusion models in {cache}; fetch one with `vqgen download microsoft/vq-diffusion-ithq`")
            return
        rows = [("REPO", "REVISION", "COMMIT", "PRECISION", "SIZE")]
        rows += [(m.repo_id, ",".join(m.refs) or "-", short(m.commit), m.precision, human(m.size)) for m in found]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        return

    targets = [m for m in found if m.repo_id == remove]
    if revision:
        targets = [m for m in targets if revision in m.refs or (len(revision) >= 7 and m.commit.startswith(revision))]
    if not targets:
        what = remove + (f" at {revision}" if revision else "")
        raise UsageError(f"{what} is not in the cache {cache}; `vqgen models` lists what is")
    size = sum(m.size for m in targets)
    summary = f"{remove} ({', '.join(short(m.commit) for m in targets)}; {human(size)})"
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"removing {summary} needs confirmation; add --yes")
        if not typer.confirm(f"remove {summary} from {cache}?", err=True):
            say("nothing removed")
            return
    for m in targets:
        remove_commit(cache, m.repo_id, m.commit)
    prune_converted()  # and the weights converted from them
    say(f"removed {summary}")
