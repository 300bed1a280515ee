"""The Linear kernels vqgen can run, on ITHQ's real shapes, on the CPU at hand.

    python bench/bench_gemm.py --threads 2

vqgen.kernels picks the transformer's Linear kernel from the CPU's flags; this says what each
choice is worth here. Shapes: one guided step's feed-forward up-projection (2 x 1024 tokens, 1408 ->
5632) and the attention's q/k/v GEMM (1408 -> 3 x 1408). Times are the median of repeated calls,
as GFLOP/s and relative to torch's default float32 Linear measured in the same run, with the
output's relative error against float64.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vqgen import fast_layers  # noqa: E402
from vqgen.kernels import cpu_features, cpu_summary  # noqa: E402

SHAPES = {"ff.up (2048x1408 @ 1408x5632)": (2048, 1408, 5632), "attn1.qkv (2048x1408 @ 1408x4224)": (2048, 1408, 4224)}


def timed(fns: dict, x, repeats: int) -> dict:
    """name -> median seconds. The kernels take turns within each round, so a change in the
    machine's load touches them all alike and the ratios hold."""
    for fn in fns.values():
        fn(x)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def kernels(weight: torch.Tensor, bias: torch.Tensor) -> dict:
    """name -> (callable on a float32 input, available)."""
    f = cpu_features()
    out = {"float32, torch default": lambda x: F.linear(x, weight, bias)}
    if f["onednn"]:
        packed32 = fast_layers.PackedLinear.from_float(weight, bias, torch.float32, 2048)
        out["float32, oneDNN packed"] = packed32
    if f["onednn_bf16"]:
        packed16 = fast_layers.PackedLinear.from_float(weight, bias, torch.bfloat16, 2048)
        out["bfloat16, oneDNN packed"] = lambda x: packed16(x.to(torch.bfloat16))
    else:  # what --dtype bfloat16 runs on a CPU without oneDNN's bf16 GEMM
        w16, b16 = weight.to(torch.bfloat16), bias.to(torch.bfloat16)
        out["bfloat16, torch default"] = lambda x: F.linear(x.to(torch.bfloat16), w16, b16)
    if fast_layers.onednn_int8_available():
        levels = fast_layers.activation_levels()
        q = fast_layers.QuantLinear.from_float(weight, bias, torch.float32, levels=levels)
        out[f"int8, oneDNN u8 x s8 ({levels} levels)"] = q
    elif f["vnni"]:  # the fallback vqgen uses without oneDNN's int8 linear (without VNNI it is ~100x slower)
        out["int8, torch._int_mm"] = fast_layers.Int8Linear.from_float(weight, bias, torch.float32)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU: {cpu_summary()}; threads {torch.get_num_threads()}; torch {torch.__version__}")
    f = cpu_features()
    print(f"flags: capability {f['capability']}, avx512_bf16 {f['avx512_bf16']}, amx {f['amx']}, vnni {f['vnni']}, "
          f"onednn {f['onednn']}, onednn_bf16 {f['onednn_bf16']}")
    with torch.no_grad():
        for label, (m, k, n) in SHAPES.items():
            weight = torch.randn(n, k) / k**0.5
            bias = torch.randn(n) * 0.1
            x = torch.randn(m, k)
            reference = F.linear(x.double(), weight.double(), bias.double())
            flops = 2 * m * k * n
            print(f"\n{label}")
            print(f"| kernel | ms | GFLOP/s | time vs default | rel. error |")
            print("|---|---:|---:|---:|---:|")
            fns = kernels(weight, bias)
            base = None
            for name, seconds in timed(fns, x, args.repeats).items():
                y = fns[name](x).double()
                err = ((y - reference).norm() / reference.norm()).item()
                base = base or seconds
                print(f"| {name} | {seconds * 1e3:.1f} | {flops / seconds / 1e9:.0f} | {seconds / base:.2f} | {err:.1e} |")


if __name__ == "__main__":
    main()
