"""Quality yardstick: prompt accuracy of the bundled shapes model under each sampler setting.

For every setting, generate the canonical caption ("a red circle in the top left") of every seen
(colour, shape, position) combination and of every held-out one, judge each image with
vqgen.demo.judge (colour, shape and position must all be right), and report accuracy and wall
time per image. Prints a markdown table; --write also puts it into docs/quality.md between the
bench markers.

    python bench/bench_quality.py                      # ~17 minutes on 2 CPU cores
    python bench/bench_quality.py --quick              # a few settings, one seed: ~2 minutes
    python bench/bench_quality.py --write docs/quality.md
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from pathlib import Path

import torch

from vqgen.bundled import bundled_model_path
from vqgen.demo import shapes
from vqgen.demo.judge import judge, score
from vqgen.pipeline import Pipeline, Settings

# (label, settings). Guidance 1 means off; truncation 1.0 keeps everything.
SETTINGS: list[tuple[str, dict]] = [
    ("100 steps (the full chain)", dict(steps=100)),
    ("50 steps, strided", dict(steps=50)),
    ("25 steps, strided", dict(steps=25)),
    ("10 steps, strided", dict(steps=10)),
    ("25 steps, `--schedule diffusers`", dict(steps=25, schedule="diffusers")),
    ("10 steps, `--schedule diffusers`", dict(steps=10, schedule="diffusers")),
    ("100 steps, purity sampler", dict(steps=100, sampler="purity", purity_weight=1.0)),
    ("25 steps, purity sampler", dict(steps=25, sampler="purity", purity_weight=1.0)),
    ("25 steps, guidance 3", dict(steps=25, guidance=3.0)),
    ("25 steps, guidance 5", dict(steps=25, guidance=5.0)),
    ("25 steps, truncation 0.86", dict(steps=25, truncation=0.86)),
    ("25 steps, truncation 0.86, `--schedule diffusers`", dict(steps=25, truncation=0.86, schedule="diffusers")),
    ("10 steps, truncation 0.86", dict(steps=10, truncation=0.86)),
    ("25 steps, purity sampler, truncation 0.86", dict(steps=25, sampler="purity", purity_weight=1.0, truncation=0.86)),
]
QUICK = {"100 steps (the full chain)", "25 steps, strided", "25 steps, `--schedule diffusers`", "25 steps, guidance 3"}
BASE = dict(guidance=1.0, truncation=1.0, schedule="strided", sampler="posterior")

START, END = "<!-- bench_quality:start -->", "<!-- bench_quality:end -->"


def judged(pipe: Pipeline, settings: Settings, combos, seeds: int, batch: int,
           max_images: int | None = None) -> tuple[list[bool], float]:
    """Right or wrong per image, and the seconds spent generating, over combos x seeds.
    Seed of (combo i, round s) = 1000 s + i, so two settings see the same prompts and seeds."""
    jobs = [(c, 1000 * s + i) for s in range(seeds) for i, c in enumerate(combos)][:max_images]
    right, seconds = [], 0.0
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        t0 = time.perf_counter()
        gen = pipe.generate([shapes.canonical_caption(*c) for c, _ in chunk], [s for _, s in chunk], settings)
        seconds += time.perf_counter() - t0
        right += [score(c, judge(image)) for (c, _), image in zip(chunk, gen.images)]
    return right, seconds


def run_setting(pipe: Pipeline, settings: Settings, combos, seeds: int, batch: int,
                max_images: int | None = None) -> tuple[float, float, int]:
    """(accuracy, seconds, images) over combos x seeds."""
    right, seconds = judged(pipe, settings, combos, seeds, batch, max_images)
    return sum(right) / len(right), seconds, len(right)


def write_between_markers(path: Path, start: str, end: str, block: str) -> None:
    """Put block (which starts with `start` and ends with `end`) into a markdown file, replacing
    what is between the markers, or appending it."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Quality\n\n{start}\n{end}\n"
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the bundled shapes model)")
    parser.add_argument("--seen-seeds", type=int, default=1, help="images per seen combination (80 combinations)")
    parser.add_argument("--unseen-seeds", type=int, default=4, help="images per held-out combination (10 combinations)")
    parser.add_argument("--batch", type=int, default=80, help="images per network call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="four settings, one seed each")
    parser.add_argument("--only", default=None, help="regex: run only the settings whose label matches")
    parser.add_argument("--max-images", type=int, default=None, help="at most this many images per set (for timing runs)")
    parser.add_argument("--write", type=Path, default=None, help="markdown file to put the table into (between the bench markers)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    folder = Path(args.model) if args.model else bundled_model_path("shapes")
    pipe = Pipeline.from_folder(folder, device=args.device, dtype="float32")
    settings = [(label, s) for label, s in SETTINGS if not args.quick or label in QUICK]
    if args.only:
        settings = [(label, s) for label, s in settings if re.search(args.only, label)]
    seen_seeds, unseen_seeds = (1, 2) if args.quick else (args.seen_seeds, args.unseen_seeds)

    # Warm-up (first calls pay for allocation and kernel selection).
    pipe.generate(["a red circle in the top left"], [0], Settings(steps=2, guidance=1.0))

    n_seen, n_unseen = (min(n, args.max_images or n) for n in (80 * seen_seeds, 10 * unseen_seeds))
    header = [
        f"| setting | seen accuracy ({n_seen} images) | unseen accuracy ({n_unseen} images) | seconds per image |",
        "|---|---|---|---|",
    ]
    rows = []
    print("\n".join(header), flush=True)
    for label, overrides in settings:
        s = Settings(**(BASE | overrides))
        seen, t1, n1 = run_setting(pipe, s, shapes.seen_combinations(), seen_seeds, args.batch, args.max_images)
        unseen, t2, n2 = run_setting(pipe, s, shapes.unseen_combinations(), unseen_seeds, args.batch, args.max_images)
        row = f"| {label} | {seen:.1%} | {unseen:.1%} | {(t1 + t2) / (n1 + n2):.3f} |"
        rows.append(row)
        print(row, flush=True)

    note = (f"Model `{folder.name}`; guidance 1 (off) and truncation 1.0 unless stated; images generated in batches "
            f"of up to {args.batch} on {args.device} ({platform.processor() or platform.machine()}, {args.threads} threads, "
            f"float32, torch {torch.__version__}); seconds per image include decoding, not judging.")
    print("\n" + note)
    if args.write:
        write_between_markers(args.write, START, END, "\n".join([START, *header, *rows, "", note, END]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
