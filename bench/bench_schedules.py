"""Strided vs. the reference's schedule (`--schedule diffusers`) at the same step count, on the
bundled shapes model: why they differ so little, measured.

With the standard schedule att + ctt = 1 - 1e-6: the chain is an absorbing (mask) chain. Then
  1. both schedules open masked tokens at the same rate: the expected share still masked after step
     k is ctt[t_k]/ctt[t_0] for either, and both sequences of t are evenly spaced (table 1);
  2. the exact p(x0 | x_t) does not depend on t (the mask pattern is independent of x0), so the
     reference's one error, telling the network t = S-1 ... 0 while it sees 100% ... 0% masks,
     costs only what the network does with a timestep it was never trained on (table 2);
and the accuracy of the two, on the same prompts and seeds, is compared pair by pair (table 3).

    python bench/bench_schedules.py                 # ~8 minutes on 2 CPU cores
    python bench/bench_schedules.py --write docs/quality.md
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from bench_quality import judged, write_between_markers
from vqgen.bundled import bundled_model_path
from vqgen.demo import shapes
from vqgen.pipeline import Pipeline, Settings
from vqgen.sampling import gumbel_sample, posterior_logits, truncate
from vqgen.schedule import timesteps_for

START, END = "<!-- bench_schedules:start -->", "<!-- bench_schedules:end -->"


def masked_share(pipe: Pipeline, schedule: str, steps: int) -> list[float]:
    """Expected share of tokens still masked after each step (before the last, which opens all).
    A masked token stays masked from t to s with probability ctt[s]/ctt[t]; the start is all masks."""
    ctt = pipe.c.schedule.ctt
    ts = timesteps_for(schedule, pipe.num_timesteps, steps)
    share, out = 1.0, []
    for t, s in zip(ts, ts[1:]):
        share *= ctt[s] / ctt[t]
        out.append(share)
    return out


@torch.inference_mode()
def timestep_sensitivity(pipe: Pipeline, steps: int, truncation: float, seed: int = 0) -> list[tuple[int, int, float, float, float]]:
    """Along strided trajectories of every combination's caption: per step (t, the reference's t at
    that step, share masked, mean KL(p(x0|x_t, t) || p(x0|x_t, reference t)) over masked positions,
    share of masked positions whose most likely token changes)."""
    c = pipe.c
    combos = shapes.seen_combinations() + shapes.unseen_combinations()
    memory = c.transformer.text_memory(c.text_encoder.encode([shapes.canonical_caption(*x) for x in combos]).embeddings)
    ts = timesteps_for("strided", pipe.num_timesteps, steps)
    reference_ts = timesteps_for("diffusers", pipe.num_timesteps, steps)
    transitions = c.schedule.transitions(ts, ts[1:] + [-1])
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(combos))]
    mask_id = c.transformer.cfg.mask_id
    x = torch.full((len(combos), c.transformer.cfg.num_tokens), mask_id)
    rows = []
    for t, t_ref, step in zip(ts[:-1], reference_ts, transitions):
        logp = c.transformer(x, torch.tensor(t), memory)  # (B, K-1, N)
        logp_ref = c.transformer(x, torch.tensor(t_ref), memory)
        masked = x == mask_id
        kl = (logp.exp() * (logp - logp_ref)).sum(1)
        changed = logp.argmax(1) != logp_ref.argmax(1)
        rows.append((t, t_ref, masked.float().mean().item(), kl[masked].mean().item(), changed[masked].float().mean().item()))
        x = gumbel_sample(posterior_logits(truncate(logp, truncation), x, step), generators)
    return rows


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test: the chance of a split at least this uneven if neither setting
    were better (discordant pairs ~ Binomial(n, 1/2))."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the bundled shapes model)")
    parser.add_argument("--seen-seeds", type=int, default=10, help="images per seen combination (80 combinations)")
    parser.add_argument("--unseen-seeds", type=int, default=40, help="images per held-out combination (10 combinations)")
    parser.add_argument("--batch", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", type=Path, default=None, help="markdown file to put the tables into (between the bench markers)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    folder = Path(args.model) if args.model else bundled_model_path("shapes")
    pipe = Pipeline.from_folder(folder, device="cpu", dtype="float32")
    base = {**pipe.recommended}  # the model's recommended guidance, truncation and sampler (none: vqgen's)
    out: list[str] = []

    def emit(line: str = "") -> None:
        out.append(line)
        print(line, flush=True)

    emit("Table 1: expected share of tokens still masked after step k (25 steps)")
    emit()
    strided, reference = masked_share(pipe, "strided", 25), masked_share(pipe, "diffusers", 25)
    emit("| after step | " + " | ".join(str(k) for k in (1, 4, 8, 12, 16, 20, 24)) + " |")
    emit("|---|" + "---|" * 7)
    for name, shares in (("strided (t = 99, 95, ..., 0)", strided), ("diffusers (t = 24, 23, ..., 0)", reference)):
        emit(f"| {name} | " + " | ".join(f"{shares[k - 1]:.1%}" for k in (1, 4, 8, 12, 16, 20, 24)) + " |")

    emit()
    emit("Table 2: what the reference's timestep changes in the network's prediction (25 steps, strided trajectories, 90 captions)")
    emit()
    emit("| step | t | reference's t | masked | KL(p(x0 given t) \\|\\| p(x0 given reference's t)), nats | most likely token changes |")
    emit("|---|---|---|---|---|---|")
    rows = timestep_sensitivity(pipe, 25, Settings(**base).truncation)
    for k, (t, t_ref, masked, kl, changed) in enumerate(rows, start=1):
        if k in (1, 2, 4, 8, 12, 16, 20, 24):
            emit(f"| {k} | {t} | {t_ref} | {masked:.0%} | {kl:.4f} | {changed:.1%} |")

    emit()
    emit(f"Table 3: accuracy on the same prompts and seeds ({80 * args.seen_seeds} seen + {10 * args.unseen_seeds} unseen images per setting)")
    emit()
    emit("| steps | split | strided | diffusers | only strided right | only diffusers right | McNemar p |")
    emit("|---|---|---|---|---|---|---|")
    for steps in (25, 10):
        for split, combos, seeds in (("seen", shapes.seen_combinations(), args.seen_seeds),
                                     ("unseen", shapes.unseen_combinations(), args.unseen_seeds)):
            a, _ = judged(pipe, Settings(**{**base, "steps": steps, "schedule": "strided"}), combos, seeds, args.batch)
            b, _ = judged(pipe, Settings(**{**base, "steps": steps, "schedule": "diffusers"}), combos, seeds, args.batch)
            only_a = sum(x and not y for x, y in zip(a, b))
            only_b = sum(y and not x for x, y in zip(a, b))
            emit(f"| {steps} | {split} | {sum(a) / len(a):.1%} | {sum(b) / len(b):.1%} | {only_a} | {only_b} | {mcnemar_p(only_a, only_b):.2f} |")

    emit()
    s = Settings(**base)
    emit(f"Model `{folder.name}`; tables 2 and 3 at guidance {s.guidance:g}, truncation {s.truncation:g}, {s.sampler} sampler; "
         f"cpu, {args.threads} threads, float32, torch {torch.__version__}.")
    if args.write:
        write_between_markers(args.write, START, END, "\n".join([START, *out, END]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
