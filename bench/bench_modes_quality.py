"""The shapes yardstick for each kernel mode, paired against --exact on the same prompts and seeds.

    python bench/bench_modes_quality.py                      # 400 seen + 200 unseen images per mode
    python bench/bench_modes_quality.py --modes fast,int8 --write docs/quality.md

At the bundled model's recommended settings (25 strided steps, no guidance, truncation 0.86), every
mode makes the same images (seed of (combination i, round s) = 1000 s + i) and the judge reads each
one. For each mode: accuracy on seen and unseen combinations, how many images are pixel-identical to
exact's, and McNemar's exact test on the discordant pairs (right in one mode, wrong in the other).
A mode may be a default only if it is within 1 point of exact on both sets.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_core import MODES, mode_options  # noqa: E402
from bench_quality import write_between_markers  # noqa: E402

from vqgen.bundled import bundled_model_path  # noqa: E402
from vqgen.demo import shapes  # noqa: E402
from vqgen.demo.judge import judge, score  # noqa: E402
from vqgen.kernels import cpu_summary  # noqa: E402
from vqgen.pipeline import Pipeline, Settings  # noqa: E402

START, END = "<!-- bench_modes:start -->", "<!-- bench_modes:end -->"


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def images_and_scores(pipe: Pipeline, settings: Settings, combos, seeds: int, batch: int):
    jobs = [(c, 1000 * s + i) for s in range(seeds) for i, c in enumerate(combos)]
    images, right, seconds = [], [], 0.0
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        t0 = time.perf_counter()
        gen = pipe.generate([shapes.canonical_caption(*c) for c, _ in chunk], [s for _, s in chunk], settings)
        seconds += time.perf_counter() - t0
        images += [np.asarray(im) for im in gen.images]
        right += [score(c, judge(im)) for (c, _), im in zip(chunk, gen.images)]
    return images, right, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="fast,fast-fp32,int8")
    parser.add_argument("--seen-seeds", type=int, default=5, help="rounds over the 80 seen combinations")
    parser.add_argument("--unseen-seeds", type=int, default=20, help="rounds over the 10 held-out combinations")
    parser.add_argument("--batch", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", type=Path, help="markdown file to put the table into (between the bench markers)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modes = ["exact"] + [m for m in args.modes.split(",") if m and m != "exact"]
    assert set(modes) <= set(MODES), f"modes are {MODES}"
    folder = bundled_model_path("shapes")

    results = {}
    for m in modes:
        exact, quantize, dtype = mode_options(m, "float32")
        pipe = Pipeline.from_folder(folder, device="cpu", dtype=dtype, exact=exact, quantize=quantize)
        settings = Settings(**pipe.recommended)
        pipe.generate(["a red circle in the top left"], [0], Settings(steps=2, guidance=1.0))  # warm-up
        seen = images_and_scores(pipe, settings, shapes.seen_combinations(), args.seen_seeds, args.batch)
        unseen = images_and_scores(pipe, settings, shapes.unseen_combinations(), args.unseen_seeds, args.batch)
        results[m] = {"seen": seen, "unseen": unseen, "kernels": pipe.plan.describe(), "settings": settings}
        print(f"{m}: seen {np.mean(seen[1]):.1%}, unseen {np.mean(unseen[1]):.1%}", file=sys.stderr, flush=True)

    ex = results["exact"]
    n_seen, n_unseen = len(ex["seen"][1]), len(ex["unseen"][1])
    lines = [f"| mode | seen accuracy ({n_seen}) | unseen accuracy ({n_unseen}) | vs exact (points, seen / unseen) "
             f"| McNemar p (seen / unseen) | images identical to exact | seconds per image |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m, r in results.items():
        cells = []
        for part in ("seen", "unseen"):
            a, b = np.array(ex[part][1]), np.array(r[part][1])
            cells.append((100 * (b.mean() - a.mean()), mcnemar_p(int((a & ~b).sum()), int((~a & b).sum()))))
        same = sum(np.array_equal(x, y) for part in ("seen", "unseen") for x, y in zip(ex[part][0], r[part][0]))
        secs = (r["seen"][2] + r["unseen"][2]) / (n_seen + n_unseen)
        lines.append(f"| {m} | {np.mean(r['seen'][1]):.1%} | {np.mean(r['unseen'][1]):.1%} | "
                     f"{cells[0][0]:+.1f} / {cells[1][0]:+.1f} | {cells[0][1]:.2f} / {cells[1][1]:.2f} | "
                     f"{same}/{n_seen + n_unseen} | {secs:.3f} |")
    s = ex["settings"]
    note = (f"Model `shapes` at its recommended settings ({s.steps} {s.schedule} steps, guidance {s.guidance}, truncation "
            f"{s.truncation}); the same prompts and seeds in every mode; {args.threads} threads; {cpu_summary()}; "
            f"torch {torch.__version__}. Kernels: " + "; ".join(f"{m} = {r['kernels']}" for m, r in results.items()) + ".")
    print("\n".join(lines) + "\n\n" + note)
    if args.write:
        write_between_markers(args.write, START, END, "\n".join([START, *lines, "", note, END]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
