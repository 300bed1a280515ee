"""`vqgen download REPO_ID`: fetch a model into the Hugging Face cache; stdout is its local path."""

from __future__ import annotations

from typing import Optional

import typer

from . import app
from .progress import TerminalEvents, say


@app.command()
def download(
    repo_id: str = typer.Argument(..., help="Hub repo id, e.g. microsoft/vq-diffusion-ithq."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit (default: main)."),
    precision: str = typer.Option("fp16", "--precision", help="fp16: the *.fp16.safetensors weights (half the size, no pickle). "
                                  "fp32: the fp32 pickles, converted once to safetensors in the cache."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the files and the total size; download nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the local path."),
) -> None:
    """Download a model into the Hugging Face cache and print its local path.

    The cache is HF_HUB_CACHE (default HF_HOME/hub); fp32 conversions go to HF_HOME/vqgen.
    HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are honoured. An interrupted download resumes; a complete one is not fetched again.
    """
    from ..hub import ensure, human, short

    outcome = ensure(repo_id, revision=revision, precision=precision, events=TerminalEvents(quiet), dry_run=dry_run)
    plan, resolved = outcome.plan, outcome.resolved
    if dry_run:
        # The listing is what was asked for, so it goes to stdout.
        for name, size in plan.sizes.items():
            print(f"{human(size):>10}  {name}{'  (cached)' if name in plan.cached else ''}")
        print(f"total {human(plan.total)} in {len(plan.sizes)} files ({plan.precision}, commit {plan.commit}); "
              f"{human(plan.to_fetch if not plan.done else 0)} to download")
        return
    label = f"{repo_id} ({resolved.precision}, commit {short(resolved.commit)})"
    if outcome.fetched:
        say(f"downloaded {label}", quiet)
    else:
        say(f"{label} is already in the cache; nothing to do", quiet)
    print(resolved.path, flush=True)
