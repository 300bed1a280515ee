"""One ITHQ transformer block per kernel mode, timed in turns in one process.

    python bench/bench_layer.py --threads 2 [--repeats 5] [--layers 2]

bench_core.py runs each mode in its own process, one after the other, so on a shared machine a
change in load lands on one mode and not the others. Here every mode's block runs on the same input
within each round, and the medians' ratios hold however busy the machine is. A guided step is
36 of these blocks plus the output head and the sampler (which every mode shares), so the block
ratio is the step's ratio to within the head's and sampler's share (see bench_core.py).
Random weights at ITHQ's real widths (16 heads x 88, feed-forward 5632, text width 512), a guided
batch (2 x 1024 tokens), weights converted as the loader converts them for each mode.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from vqgen.config import TransformerConfig  # noqa: E402
from vqgen.kernels import apply_plan, cpu_summary, plan_for, weight_dtype  # noqa: E402
from vqgen.transformer import DiscreteTransformer  # noqa: E402

MODES = {"exact": dict(exact=True), "fast": dict(), "fast-fp32": dict(dtype=torch.float32), "int8": dict(quantize="int8")}


def build(reference: DiscreteTransformer, mode: str) -> tuple[DiscreteTransformer, object]:
    options = MODES[mode]
    plan = plan_for(torch.device("cpu"), options.get("dtype"), exact=options.get("exact", False), quantize=options.get("quantize"))
    model = copy.deepcopy(reference)
    with torch.no_grad():
        for key, tensor in model.state_dict(keep_vars=True).items():
            dtype = weight_dtype(plan, key)
            if dtype is not None:
                tensor.data = tensor.data.to(dtype)
    return apply_plan(model, plan).eval(), plan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--layers", type=int, default=2, help="blocks per timed call (their mean is reported)")
    p.add_argument("--modes", default="exact,fast,fast-fp32,int8")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = TransformerConfig(num_layers=args.layers)
    reference = DiscreteTransformer(cfg)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if param.dim() > 1:  # default inits leave the AdaLayerNorms' projections near zero
                param.normal_(std=param.shape[-1] ** -0.5)
    modes = [m for m in args.modes.split(",") if m]
    models = {m: build(reference, m) for m in modes}
    h = torch.randn(2, cfg.num_tokens, cfg.dim)
    text = torch.randn(2, 77, cfg.text_dim)
    t = torch.tensor(50)

    def run(model):
        memory = model.text_memory(text)
        x = h.to(model.blocks[0].norm3.weight.dtype)
        start = time.perf_counter()
        for block, kv in zip(model.blocks, memory):
            x = block(x, t, kv)
        return time.perf_counter() - start, x.float()

    times = {m: [] for m in modes}
    outputs = {}
    with torch.inference_mode():
        for m in modes:  # warm-up
            run(models[m][0])
        for _ in range(args.repeats):
            for m in modes:
                seconds, outputs[m] = run(models[m][0])
                times[m].append(seconds / args.layers)
    base_mode = modes[0]
    base = statistics.median(times[base_mode])
    ref = outputs[base_mode]
    print(f"CPU: {cpu_summary()}; threads {torch.get_num_threads()}; torch {torch.__version__}; "
          f"{args.repeats} rounds, median; ratio against {base_mode}")
    print("| mode | transformer dtype | Linear kernels | s per block (guided) | ratio | rel. difference of the output |")
    print("|---|---|---|---:|---:|---:|")
    for m in modes:
        model, plan = models[m]
        seconds = statistics.median(times[m])
        diff = ((outputs[m] - ref).norm() / ref.norm()).item()
        name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[plan.transformer_dtype]
        print(f"| {m} | {name} | {plan.linear} | {seconds:.3f} | {seconds / base:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
