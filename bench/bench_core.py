"""vqgen against diffusers on the same random checkpoint with ITHQ's real widths.

    python bench/bench_core.py --layers 36 --steps 3 --threads 2                # ITHQ's full depth
    python bench/bench_core.py --modes exact,fast,fast-fp32,int8 [--device cpu] [--dtype float32]

Modes (vqgen.kernels): exact = the reference's arithmetic (must make diffusers' tokens); fast = the
default, chosen from the device (bfloat16 transformer on a CPU with bf16 units); fast-fp32 = the
default path held to float32 (oneDNN's GEMM on AMD CPUs); int8 = --quantize int8.

Builds one random checkpoint with diffusers (ITHQ transformer widths: 16 heads x 88, 4097 classes,
32x32 tokens, text width 512; the ITHQ VQ-VAE; a CLIP ViT-B/32-shaped text encoder), saves it,
then runs each implementation in its own fresh process (so peak memory is its own) with the same
prompt, seed and settings, and prints time per step, whole run, load time, peak memory, and the
ratios. Each vqgen mode first loads once alone, in a fresh HF_HOME: that is its first load, which
converts the weights and keeps the converted copy (vqgen/converted.py); its timed run then loads
as every later run does. It checks that exact made diffusers' tokens, and says how many tokens each other mode
shares with them (a random network at full depth is chaotic: agreement is measured properly by
bench/bench_kernels.py). The CPU's flags are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def build_checkpoint(folder: Path, layers: int) -> None:
    import torch
    from diffusers import Transformer2DModel, VQDiffusionPipeline, VQDiffusionScheduler, VQModel
    from transformers import CLIPTextConfig, CLIPTextModel

    import tiny_checkpoint as tc

    torch.manual_seed(0)
    transformer = Transformer2DModel(
        num_attention_heads=16, attention_head_dim=88, num_vector_embeds=4097, sample_size=32, num_layers=layers,
        cross_attention_dim=512, activation_fn="geglu-approximate", attention_bias=True, num_embeds_ada_norm=100,
        norm_type="ada_norm", norm_num_groups=32, dropout=0.0,
    )
    vqvae = VQModel(
        act_fn="silu", block_out_channels=[64, 128, 256, 512], latent_channels=256, num_vq_embeddings=4096,
        vq_embed_dim=128, layers_per_block=2, norm_num_groups=32, sample_size=32,
        down_block_types=["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3,
    )
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                                        num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu"))
    null_cls = tc._learned_embeddings_class()
    null = null_cls(learnable=True, hidden_size=512, length=77)
    with torch.no_grad():
        null.embeddings.normal_()
        for module in (transformer, vqvae):  # default inits leave AdaLN / norms trivial
            for p in module.parameters():
                p.add_(0.02 * torch.randn_like(p))
    pipe = VQDiffusionPipeline(vqvae=vqvae, text_encoder=text, tokenizer=tc.load_tiny_tokenizer(), transformer=transformer,
                               scheduler=VQDiffusionScheduler(num_vec_classes=4097), learned_classifier_free_sampling_embeddings=null)
    tc.save_diffusers_layout(pipe, folder)


MODES = ("exact", "fast", "fast-fp32", "int8")


def mode_options(mode: str, dtype):
    """(exact, quantize, dtype) of Pipeline.from_folder for a mode; --dtype holds for exact only."""
    return {"exact": (True, None, dtype), "fast": (False, None, None), "fast-fp32": (False, None, "float32"),
            "int8": (False, "int8", None)}[mode]


def run_one(impl: str, folder: Path, args) -> dict:
    """In a fresh process: load, generate once, report timings and peak memory."""
    import torch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    stamps = []
    t0 = time.perf_counter()
    if impl == "diffusers":
        import tiny_checkpoint as tc

        pipe = tc.load_diffusers_layout(folder).to(device=device, dtype=dtype)
        sync()
        loaded = time.perf_counter()

        def run():
            holder = {}

            def cb(i, t, sample):
                sync()
                stamps.append(time.perf_counter())
                holder["tokens"] = sample

            gen = torch.Generator(device=device).manual_seed(args.seed)
            pipe("a red bus", num_inference_steps=args.steps, guidance_scale=args.guidance, truncation_rate=args.truncation,
                 generator=gen, callback=cb, callback_steps=1, output_type="np")
            return holder["tokens"]
    else:
        from vqgen.pipeline import Pipeline, Settings

        exact, quantize, dtype = mode_options(impl, dtype)
        pipe = Pipeline.from_folder(folder, device=str(device), dtype=dtype, exact=exact, quantize=quantize)
        sync()
        loaded = time.perf_counter()
        if args.load_only:
            return {"load_s": loaded - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "converted": pipe.c.converted.action}
        settings = Settings(steps=args.steps, schedule="diffusers", guidance=args.guidance, truncation=args.truncation)

        def run():
            def cb(done, total):
                sync()
                stamps.append(time.perf_counter())

            tokens, _, _ = pipe.generate_tokens(["a red bus"], [args.seed], settings, on_step=cb)
            pipe.decode(tokens)
            return tokens

    if device.type == "cuda":  # one warm-up run: CUDA kernels and allocator
        run()
        stamps.clear()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    tokens = run()
    sync()
    end = time.perf_counter()
    per_step = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    per_step_sorted = sorted(per_step[1:] or per_step)
    return {
        "load_s": loaded - t0,
        "step_s": per_step_sorted[len(per_step_sorted) // 2],
        "run_s": end - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "tokens": tokens.cpu().flatten().tolist(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--folder", type=Path, help="reuse a checkpoint built earlier")
    p.add_argument("--modes", default="exact,fast", help=f"vqgen modes to run, comma-separated, of {','.join(MODES)}")
    p.add_argument("--child", choices=["diffusers", *MODES], help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        print(json.dumps(run_one(args.child, args.folder, args)))
        return

    folder = args.folder or Path(tempfile.mkdtemp(prefix="vqgen-bench-"))
    if not (folder / "model_index.json").exists():
        print(f"building a random ITHQ-width checkpoint with {args.layers} layers in {folder} ...", file=sys.stderr)
        build_checkpoint(folder, args.layers)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        sys.exit(f"unknown mode(s) {sorted(unknown)}; use {','.join(MODES)}")
    results, first_loads = {}, {}
    # vqgen's converted weights go to a fresh folder: each converting mode's first load converts
    # and writes them (timed alone, load only), and its run then loads them as every later run does.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HF_HOME": tempfile.mkdtemp(prefix="vqgen-bench-home-")}

    def child(impl: str, *extra: str) -> dict:
        cmd = [sys.executable, __file__, "--child", impl, "--folder", str(folder), *extra] + [
            f"--{k}={getattr(args, k)}" for k in ("steps", "guidance", "truncation", "seed", "device", "dtype", "threads")]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit(f"{impl} failed:\n{out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    for impl in ("diffusers", *modes):
        if impl != "diffusers":
            first_loads[impl] = child(impl, "--load-only")
        results[impl] = child(impl)
    args.layers = json.loads((folder / "transformer" / "config.json").read_text())["num_layers"]
    d = results["diffusers"]
    for r in results.values():
        r["same_tokens"] = sum(a == b for a, b in zip(r["tokens"], d["tokens"])) / len(d["tokens"])
    for r in results.values():
        r.pop("tokens")
    from vqgen.kernels import cpu_summary

    cpu = cpu_summary() if args.device == "cpu" else args.device
    for impl, first in first_loads.items():
        results[impl]["first_load_s"], results[impl]["first_load_rss_mb"] = first["load_s"], first["peak_rss_mb"]
    results["diffusers"]["first_load_s"], results["diffusers"]["first_load_rss_mb"] = d["load_s"], d["peak_rss_mb"]
    if args.json:
        print(json.dumps({"args": vars(args) | {"folder": str(folder)}, "cpu": cpu, **results}, default=str))
        return
    print(f"device {args.device} ({cpu}), --dtype {args.dtype} for exact, {args.layers} layers at ITHQ widths, "
          f"{args.steps} steps, guidance {args.guidance}, threads {args.threads or 'default'}")
    rows = [("step (s)", "step_s"), ("run (s)", "run_s"), ("load (s)", "load_s"), ("peak RSS (MB)", "peak_rss_mb"),
            ("first load (s)", "first_load_s"), ("its RSS (MB)", "first_load_rss_mb")]
    if args.device.startswith("cuda"):
        rows.append(("peak CUDA (MB)", "peak_cuda_mb"))
    header = f"{'':16}{'diffusers':>11}" + "".join(f"{m:>11}{'ratio':>7}" for m in modes)
    print(header)
    for label, key in rows:
        print(f"{label:16}{d[key]:11.2f}" + "".join(f"{results[m][key]:11.2f}{results[m][key] / d[key]:7.2f}" for m in modes))
    print(f"{'same tokens':16}{'':11}" + "".join(f"{results[m]['same_tokens']:11.1%}{'':7}" for m in modes))
    print("(ratio = vqgen / diffusers; below 1 is better. load: with the converted weights kept from an earlier load, "
          "as every run but the first; first load: converting and keeping them, load only)")


if __name__ == "__main__":
    main()
