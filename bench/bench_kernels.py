"""How far the fast kernels are from exact, at ITHQ's full depth (random weights at its real widths).

    python bench/bench_kernels.py --folder /tmp/ithq36 --steps 25 --modes fast,int8 --threads 2

For each mode, in one process (reusing a checkpoint built by bench/bench_core.py --folder ...):
1. KL: along the exact chain (strided steps, guidance as given), the mode's network is run on the
   very same x_t and text; the mean over positions of KL(p_exact(x0 | x_t) || p_mode(x0 | x_t)), in
   nats, per step and on average. This is the error the kernels add to each step's distribution.
2. Token agreement: the mode's own chain with the same seed; the share of final tokens equal to
   exact's. A random network is chaotic (tiny differences early change which tokens open), so this
   is a pessimistic figure; the shapes yardstick (bench/bench_quality.py --modes) measures images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, required=True, help="checkpoint folder (bench_core.py --folder builds one)")
    p.add_argument("--layers", type=int, default=36, help="layers when the folder has to be built")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt", default="a red bus")
    p.add_argument("--modes", default="fast,int8")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()

    import torch

    from bench_core import MODES, build_checkpoint, mode_options
    from vqgen.kernels import cpu_summary
    from vqgen.pipeline import Pipeline, Settings
    from vqgen.sampling import apply_guidance

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)  # the prompts are encoded in inference mode; nothing here needs autograd
    if not (args.folder / "model_index.json").exists():
        print(f"building a random ITHQ-width checkpoint with {args.layers} layers in {args.folder} ...", file=sys.stderr)
        build_checkpoint(args.folder, args.layers)
    layers = json.loads((args.folder / "transformer" / "config.json").read_text())["num_layers"]
    modes = [m for m in args.modes.split(",") if m and m != "exact"]
    assert set(modes) <= set(MODES), f"modes are {MODES}"
    settings = Settings(steps=args.steps, guidance=args.guidance, truncation=args.truncation)
    guided = args.guidance > 1.0

    exact = Pipeline.from_folder(args.folder, device="cpu", exact=True)
    pipes = {}
    for m in modes:
        ex, quantize, dtype = mode_options(m, None)
        pipes[m] = Pipeline.from_folder(args.folder, device="cpu", dtype=dtype, exact=ex, quantize=quantize)

    # 1. The exact chain, with every mode's network run on the same inputs.
    text, _ = exact.encode_prompts([args.prompt], guided)
    memories = {m: pipe.c.transformer.text_memory(text) for m, pipe in pipes.items()}
    kl = {m: [] for m in modes}
    seconds = {m: 0.0 for m in modes}

    def inspect(t, x, logp):
        for m, pipe in pipes.items():
            began = time.perf_counter()
            out = pipe.c.transformer(torch.cat([x, x]) if guided else x, t, memories[m])
            seconds[m] += time.perf_counter() - began
            if guided:
                out = apply_guidance(out, args.guidance)
            # Both are log-probabilities over K-1 classes; exact's zero-probability classes add 0.
            p_exact = logp.exp()
            kl[m].append(float((p_exact * (logp - out)).sum(dim=1).mean()))
        print(f"  step t={int(t)}: " + ", ".join(f"{m} KL {kl[m][-1]:.2e}" for m in modes), file=sys.stderr, flush=True)

    began = time.perf_counter()
    exact_tokens, timesteps, _ = exact.generate_tokens([args.prompt], [args.seed], settings, inspect=inspect)
    exact_seconds = time.perf_counter() - began - sum(seconds.values())

    # 2. Each mode's own chain from the same seed.
    results = {}
    for m, pipe in pipes.items():
        began = time.perf_counter()
        tokens, _, _ = pipe.generate_tokens([args.prompt], [args.seed], settings)
        took = time.perf_counter() - began
        results[m] = {
            "mean_kl": sum(kl[m]) / len(kl[m]),
            "max_kl": max(kl[m]),
            "kl_per_step": kl[m],
            "token_agreement": float((tokens == exact_tokens).float().mean()),
            "chain_s": took,
            "kernels": pipe.plan.describe(),
        }
        del pipe
    cpu = cpu_summary()
    print(f"{layers} layers at ITHQ widths, {args.steps} strided steps, guidance {args.guidance}, truncation {args.truncation}, "
          f"seed {args.seed}, threads {torch.get_num_threads()}; {cpu}; exact chain {exact_seconds:.0f} s")
    print(f"{'mode':10}{'mean KL (nats)':>16}{'max KL':>10}{'same tokens':>13}{'chain (s)':>11}")
    for m, r in results.items():
        print(f"{m:10}{r['mean_kl']:16.2e}{r['max_kl']:10.2e}{r['token_agreement']:13.1%}{r['chain_s']:11.0f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"folder": str(args.folder)}, "layers": layers, "cpu": cpu,
                                         "exact_chain_s": exact_seconds, "results": results}, default=str, indent=1))


if __name__ == "__main__":
    main()
