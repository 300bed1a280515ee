"""Editing yardstick on the bundled shapes model: inpainting and variations, each alternative side by side.

Sources: the canonical caption "a C1 S1 in the P" of every seen combination, generated at the
model's recommended settings (seeds 1000 r + i), kept when the judge reads them right.

Inpainting: the region of P is masked (its quadrant; for "center" the 40x40 box where a centred
shape can lie) and repainted with "a C2 S2 in the P", (C2, S2) another seen pair (seeded choice).
Right when the judge reads (C2, S2, P). Outside: mean absolute difference (0-255) to the source of
the pixels more than one token cell (8 px) from the mask, for the written image (pasted) and the
raw decode. Kept tokens changed: the share of tokens outside the repainted region that differ
from the source's tokens at the end (clamping makes it 0).

Variations: no mask, the source's own prompt, strength s. Kept when the judge still reads (C1, S1,
P); also the mean pixel difference to the source and the share of tokens changed.

    python bench/bench_edit.py                       # 240 sources, ~15 minutes on 2 CPU cores
    python bench/bench_edit.py --rounds 1 --quick    # smoke run
    python bench/bench_edit.py --write docs/editing.md
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import write_between_markers  # noqa: E402

from vqgen.bundled import bundled_model_path
from vqgen.demo import shapes
from vqgen.demo.judge import judge, score
from vqgen.editing import EditOptions, dilate, paste_back
from vqgen.pipeline import Pipeline, Settings

START, END = "<!-- bench_edit:start -->", "<!-- bench_edit:end -->"
SIDE = 64
AWAY = 8  # pixels from the mask beyond which "outside" is measured (one token cell)

# (label, EditOptions overrides, Settings overrides); each row changes one thing from the base row
# (explicit, so that the table stays right whatever defaults.py says); the written image is pasted
# back with a 4 px feather except in the rows of the base that say otherwise.
INPAINT: list[tuple[str, dict, dict]] = [
    ("base: start T-1, grow 2, hole filled, kept tokens clamped, context predicted", dict(start="top", grow=2, fill="median", keep="clamp", context="predicted"), {}),
    ("start where ctt[t] = the hole's share", dict(start="match", grow=2, fill="median", keep="clamp", context="predicted"), {}),
    ("grow 0", dict(grow=0), {}),
    ("grow 1", dict(grow=1), {}),
    ("grow 3", dict(grow=3), {}),
    ("hole encoded as it is (no fill)", dict(fill="none"), {}),
    ("grow 1, hole encoded as it is (no fill)", dict(grow=1, fill="none"), {}),
    ("kept tokens re-noised by q(x_s given x0) each step", dict(keep="noised"), {}),
    ("start where ctt[t] = the hole's share, kept tokens re-noised", dict(start="match", keep="noised"), {}),
    ("kept tokens free (set at the start only, never clamped)", dict(keep="free"), {}),
    ("decoded with the source's kept tokens around the hole (no predicted context)", dict(context="source"), {}),
    ("guidance 2 (a generation setting; the model recommends 1)", {}, dict(guidance=2.0)),
]
BASE = dict(start="top", grow=2, fill="median", keep="clamp", context="predicted")
PASTES: list[tuple[str, int | None]] = [("paste, feather 4 px", 4), ("paste, feather 0", 0), ("paste, feather 8 px", 8), ("no paste (raw decode)", None)]
STRENGTHS = (0.2, 0.3, 0.5, 0.7, 1.0)


def region_of(position: str) -> np.ndarray:
    m = np.zeros((SIDE, SIDE), dtype=bool)
    h = SIDE // 2
    boxes = {"top left": (0, 0, h, h), "top right": (h, 0, SIDE, h), "bottom left": (0, h, h, SIDE),
             "bottom right": (h, h, SIDE, SIDE), "center": (12, 12, 52, 52)}
    x0, y0, x1, y1 = boxes[position]
    m[y0:y1, x0:x1] = True
    return m


def read(image) -> tuple:
    v = judge(image)
    return v.color, v.shape, v.position


def make_sources(pipe: Pipeline, rounds: int, batch: int):
    """[(combo, seed, PIL image)] judged right."""
    settings = Settings(**pipe.recommended)
    jobs = [(c, 1000 * r + i) for r in range(rounds) for i, c in enumerate(shapes.seen_combinations())]
    out, wrong = [], 0
    for k in range(0, len(jobs), batch):
        chunk = jobs[k:k + batch]
        gen = pipe.generate([shapes.canonical_caption(*c) for c, _ in chunk], [s for _, s in chunk], settings)
        for (c, s), image in zip(chunk, gen.images):
            if score(c, judge(image)):
                out.append((c, s, image))
            else:
                wrong += 1
    return out, wrong


def targets_for(sources, seed: int = 7):
    rng = np.random.default_rng(seed)
    pairs = sorted({(c, s) for c, s, _ in shapes.seen_combinations()})
    out = []
    for (c1, s1, p), _, _ in sources:
        choices = [q for q in pairs if q != (c1, s1)]
        c2, s2 = choices[rng.integers(len(choices))]
        out.append((c2, s2, p))
    return out


def run_inpaint(pipe, sources, targets, overrides: dict, batch: int, setting_overrides: dict):
    settings = Settings(**{**pipe.recommended, **setting_overrides})
    options = EditOptions(**{**BASE, **overrides})
    prepared = [pipe.prepare_source(img, region_of(c[2]).astype(np.uint8) * 255, grow=options.grow) for c, _, img in sources]
    raws, infos, seconds = [], [], 0.0
    for k in range(0, len(sources), batch):
        rows = range(k, min(k + batch, len(sources)))
        t0 = time.perf_counter()
        gen = pipe.edit_sources([prepared[i] for i in rows], [shapes.canonical_caption(*targets[i]) for i in rows],
                                [50_000 + i for i in rows], settings, options)
        seconds += time.perf_counter() - t0
        raws += [info.decoded for info in gen.edits]  # before paste-back
        infos += gen.edits
    return prepared, raws, infos, seconds


def outside_mad(image, source, mask: np.ndarray) -> float:
    away = ~dilate(mask, AWAY)
    diff = np.abs(np.asarray(image, dtype=np.float64) - np.asarray(source, dtype=np.float64))
    return float(diff[away].mean())


def inpaint_rows(pipe, sources, targets, batch: int, only_default: bool, only: str | None = None):
    rows = []
    variants = INPAINT[:1] if only_default else INPAINT
    if only:
        variants = [v for v in variants if re.search(only, v[0])]
    for label, overrides, setting_overrides in variants:
        prepared, raws, infos, seconds = run_inpaint(pipe, sources, targets, overrides, batch, setting_overrides)
        feathers = PASTES if label.startswith("base") else PASTES[:1] + PASTES[-1:]
        for paste_label, feather in feathers:
            right, mads, kept_changed = [], [], []
            for (c, _, src), tgt, prep, raw, info in zip(sources, targets, prepared, raws, infos):
                # No paste: what --no-paste writes, the decode of the chain's tokens as they are.
                out = pipe.decode(info.tokens[None])[0] if feather is None else paste_back(raw, prep.image, prep.pixel_mask, feather)
                right.append(score(tgt, judge(out)))
                mads.append(outside_mad(out, src, prep.pixel_mask))
                kept = ~prep.repaint.reshape(-1)
                changed = (info.tokens.cpu().numpy() != info.source_tokens.cpu().numpy())[kept]
                kept_changed.append(changed.mean() if changed.size else 0.0)
            rows.append((label, paste_label, float(np.mean(right)), float(np.mean(mads)), float(np.mean(kept_changed)),
                         seconds / len(sources), len(sources)))
            print(f"| {label} | {paste_label} | {rows[-1][2]:.1%} | {rows[-1][3]:.2f} | {rows[-1][4]:.2%} | {rows[-1][5]:.3f} |", flush=True)
    return rows


def variation_rows(pipe, sources, batch: int, strengths):
    settings = Settings(**pipe.recommended)
    rows = []
    prepared = [pipe.prepare_source(img) for _, _, img in sources]
    for strength in strengths:
        options = EditOptions(strength=strength)
        kept, mads, changed, seconds, steps = [], [], [], 0.0, 0
        for k in range(0, len(sources), batch):
            idx = range(k, min(k + batch, len(sources)))
            t0 = time.perf_counter()
            gen = pipe.edit_sources([prepared[i] for i in idx], [shapes.canonical_caption(*sources[i][0]) for i in idx],
                                    [70_000 + i for i in idx], settings, options)
            seconds += time.perf_counter() - t0
            steps = len(gen.timesteps)
            for i, image, info in zip(idx, gen.images, gen.edits):
                c, _, src = sources[i]
                kept.append(score(c, judge(image)))
                mads.append(float(np.abs(np.asarray(image, dtype=np.float64) - np.asarray(src, dtype=np.float64)).mean()))
                changed.append(float((info.tokens.cpu().numpy() != info.source_tokens.cpu().numpy()).mean()))
        t_start = gen.edits[0].start_timestep
        rows.append((strength, t_start, steps, float(np.mean(kept)), float(np.mean(mads)), float(np.mean(changed)),
                     seconds / len(sources), len(sources)))
        print(f"| {strength} | {t_start} | {steps} | {rows[-1][3]:.1%} | {rows[-1][4]:.1f} | {rows[-1][5]:.1%} | {rows[-1][6]:.3f} |", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="sources per seen combination (80 combinations)")
    parser.add_argument("--batch", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the default inpainting setting and strength 0.3 only")
    parser.add_argument("--only", default=None, help="regex: only the inpainting rows whose label matches (and no variations)")
    parser.add_argument("--write", type=Path, default=None, help="markdown file for the tables (between the bench markers)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    pipe = Pipeline.from_folder(bundled_model_path("shapes"), device="cpu", dtype="float32")
    t0 = time.perf_counter()
    sources, wrong = make_sources(pipe, args.rounds, args.batch)
    targets = targets_for(sources)
    print(f"{len(sources)} sources judged right ({wrong} generated wrong and left out), {time.perf_counter() - t0:.0f} s", flush=True)

    head_i = [f"| inpainting ({len(sources)} edits) | written image | repainted right | outside-mask difference (0-255) | kept tokens changed | seconds per edit |",
              "|---|---|---|---|---|---|"]
    print("\n".join(head_i), flush=True)
    irows = inpaint_rows(pipe, sources, targets, args.batch, args.quick, args.only)
    head_v = [f"| variation strength ({len(sources)} images) | start timestep | steps | attributes kept | mean pixel difference | tokens changed | seconds per image |",
              "|---|---|---|---|---|---|---|"]
    print("\n".join(head_v), flush=True)
    vrows = [] if args.only else variation_rows(pipe, sources, args.batch, (0.3,) if args.quick else STRENGTHS)

    table_i = [f"| {a} | {b} | {c:.1%} | {d:.2f} | {e:.2%} | {f:.3f} |" for a, b, c, d, e, f, _ in irows]
    table_v = [f"| {s} | {t} | {n} | {k:.1%} | {m:.1f} | {ch:.1%} | {sec:.3f} |" for s, t, n, k, m, ch, sec, _ in vrows]
    note = (f"Model `shapes` at its recommended settings ({', '.join(f'{k} {v}' for k, v in pipe.recommended.items())}); "
            f"{len(sources)} sources ({wrong} generated sources judged wrong were left out); outside-mask difference over "
            f"pixels more than {AWAY} px from the mask; on cpu ({platform.processor() or platform.machine()}, {args.threads} "
            f"threads, float32, torch {torch.__version__}), batches of {args.batch}; seconds include encoding and decoding, not judging.")
    print("\n" + note)
    if args.write:
        block = "\n".join([START, *head_i, *table_i, "", *head_v, *table_v, "", note, END])
        write_between_markers(args.write, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
