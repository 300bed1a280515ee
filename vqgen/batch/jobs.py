"""The job list: every image of a batch run, with its seed, settings and file name.

The list is a pure function of the prompt file and the options (and the base seed), so every
torchrun process computes the same list and takes its own share, and a re-run finds the files of
an earlier one under the same names.

Seeds: a line with its own "seed" gives its n images seed, seed+1, ... (what
`vqgen PROMPT --seed SEED -n N` gives); every other image gets base + j, j being its position in
the expanded list (0-based, counting every image of every line).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import defaults
from ..errors import UsageError
from ..images import slugify
from .prompts import MAX_SEED, PromptLine

MIN_INDEX_DIGITS = 4


@dataclass(frozen=True)
class Job:
    index: int  # position in the expanded list, 0-based
    line: int  # line of the prompt file it comes from
    prompt: str
    seed: int
    steps: int | None  # None: the model's whole chain
    guidance: float
    truncation: float
    name: str  # file name inside OUTDIR
    image: str | None = None  # an edit's source image (vqgen edit), else None
    mask: str | None = None
    strength: float | None = None  # an edit's strength (1 when its line gives none)

    @property
    def group(self) -> tuple:
        """What must be equal for jobs to share one network call (edits never share one with
        generations; edits of different strengths start at different timesteps)."""
        return (self.steps, self.guidance, self.truncation, self.image is not None, self.strength)

    def settings(self, base):
        """This job's pipeline Settings: the run's settings with the line's overrides."""
        from dataclasses import replace

        return replace(base, steps=self.steps, guidance=self.guidance, truncation=self.truncation)


def file_name(index: int, seed: int, prompt: str, digits: int) -> str:
    """`0003-<seed>-<slug>.png`: the index keeps duplicates apart and the listing in file order;
    the slug has only [a-z0-9-] (see images.slugify), so no prompt can name a folder, a hidden
    file or a path outside OUTDIR, and the whole name stays far below the 255-byte limit."""
    return f"{index:0{digits}d}-{seed}-{slugify(prompt, defaults.SLUG_MAX_CHARS)}.png"


def expand(lines: list[PromptLine], base_seed: int, *, steps: int | None, guidance: float, truncation: float,
           num_images: int) -> list[Job]:
    """One Job per image, in file order; line fields override the command-line values."""
    counts = [line.n if line.n is not None else num_images for line in lines]
    total = sum(counts)
    if base_seed + total - 1 > MAX_SEED:
        raise UsageError(f"--seed {base_seed} is too large for {total} images; use a seed below {MAX_SEED - total + 1}")
    digits = max(MIN_INDEX_DIGITS, len(str(total - 1)))
    jobs: list[Job] = []
    for line, count in zip(lines, counts):
        for i in range(count):
            index = len(jobs)
            seed = line.seed + i if line.seed is not None else base_seed + index
            jobs.append(Job(
                index=index,
                line=line.line,
                prompt=line.prompt,
                seed=seed,
                steps=line.steps if line.steps is not None else steps,
                guidance=line.guidance if line.guidance is not None else guidance,
                truncation=line.truncation if line.truncation is not None else truncation,
                name=file_name(index, seed, line.prompt, digits),
                image=line.image,
                mask=line.mask,
                strength=(line.strength if line.strength is not None else defaults.EDIT_STRENGTH) if line.image else None,
            ))
    return jobs


def shard(jobs: list[Job], rank: int, world_size: int) -> list[Job]:
    """Process `rank`'s share: jobs rank, rank + K, ... Interleaving (rather than contiguous
    chunks) spreads lines with many steps or large n evenly over the processes."""
    return jobs[rank::world_size]


def batches(jobs: list[Job], size: int) -> list[list[Job]]:
    """Jobs in groups of at most `size` that can share one network call (equal steps, guidance and
    truncation), prompts mixed; groups in the order their first job appears in the file."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.group, []).append(job)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]
