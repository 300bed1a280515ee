"""Images per minute of `vqgen batch`'s code path at batch size 1 and B, against diffusers'
VQDiffusionPipeline at the same batch sizes, on random weights of a chosen size.

    python bench/bench_batch.py                      # CPU-sized model, a few minutes on 2 cores
    python bench/bench_batch.py --device cuda --preset gpu

The weights are random (throughput does not depend on their values), built with diffusers'
classes like tests/tiny_checkpoint.py but wider, so the network dominates as it does for ITHQ.
The configurations run interleaved, round after round, and each figure is the median over rounds,
so a noisy shared machine slows them all alike. Also checks that batching changed no image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tiny_checkpoint as tc  # noqa: E402

PRESETS = {
    # ITHQ: 36 layers x 1408 wide (16 heads x 88), 32x32 latent, 4097 classes, 512-wide text.
    "cpu": dict(heads=4, head_dim=64, layers=4, latent=16, codes=1024, text_width=512, steps=10, images=8, batch=4),
    "gpu": dict(heads=16, head_dim=88, layers=12, latent=32, codes=4096, text_width=512, steps=20, images=32, batch=8),
}
PROMPTS = ["a red bus on a street", "a cat", "a blue boat in the sky", "a green tree over a small house",
           "a yellow bird", "a photo of a black dog", "an orange circle in the center", "a white car on the road"]


def build(p: dict):
    """A diffusers VQDiffusionPipeline with random weights of the preset's size."""
    from diffusers import Transformer2DModel, VQDiffusionPipeline, VQDiffusionScheduler, VQModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=tc.VOCAB_SIZE, hidden_size=p["text_width"], intermediate_size=4 * p["text_width"],
                                        num_hidden_layers=2, num_attention_heads=8, max_position_embeddings=77,
                                        hidden_act="quick_gelu", pad_token_id=tc.PAD_ID, bos_token_id=tc.BOS_ID, eos_token_id=tc.EOS_ID))
    transformer = Transformer2DModel(num_attention_heads=p["heads"], attention_head_dim=p["head_dim"], num_vector_embeds=p["codes"] + 1,
                                     sample_size=p["latent"], num_layers=p["layers"], cross_attention_dim=p["text_width"],
                                     activation_fn="geglu-approximate", attention_bias=True, num_embeds_ada_norm=100,
                                     norm_type="ada_norm", norm_num_groups=32, dropout=0.0)
    vqvae = VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2 + ("AttnDownEncoderBlock2D",),
                    up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64, 128),
                    layers_per_block=1, act_fn="silu", latent_channels=64, sample_size=p["latent"] * 4,
                    num_vq_embeddings=p["codes"], norm_num_groups=32, vq_embed_dim=32)
    null = tc._learned_embeddings_class()(learnable=True, hidden_size=p["text_width"], length=77)
    with torch.no_grad():
        null.embeddings.normal_()
    pipe = VQDiffusionPipeline(vqvae=vqvae.eval(), text_encoder=text.eval(), tokenizer=tc.load_tiny_tokenizer(),
                               transformer=transformer.eval(), learned_classifier_free_sampling_embeddings=null,
                               scheduler=VQDiffusionScheduler(num_vec_classes=p["codes"] + 1, num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def vqgen_run(pipe, jobs, batch_size: int, outdir: Path, settings):
    """The batch command's own runner (generation, PNG with metadata, manifest line)."""
    from vqgen.batch.runner import Runner

    for f in outdir.glob("*"):
        f.unlink()
    runner = Runner(pipe, outdir, settings, 0, batch_size=batch_size)
    runner.run(jobs, len(jobs))
    sync(str(pipe.device))
    return {p.name: np.asarray(__import__("PIL.Image").Image.open(p)).tobytes() for p in outdir.glob("*.png")}


def diffusers_run(pipe, prompts, batch_size: int, steps: int, device: str):
    for i in range(0, len(prompts), batch_size):
        pipe(prompts[i:i + batch_size], num_inference_steps=steps, guidance_scale=5.0, truncation_rate=1.0,
             generator=torch.Generator(device).manual_seed(i), output_type="np")
    sync(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32 or float16 (default: float32 on CPU, float16 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-diffusers", action="store_true")
    args = parser.parse_args()
    p = dict(PRESETS[args.preset])
    B = args.batch_size or p["batch"]
    M = args.images or p["images"]
    dtype = {"float32": torch.float32, "float16": torch.float16}[args.dtype or ("float16" if args.device.startswith("cuda") else "float32")]

    from vqgen.batch.jobs import expand
    from vqgen.batch.prompts import PromptLine
    from vqgen.pipeline import Pipeline, Settings

    ref = build(p)
    n_params = sum(x.numel() for x in ref.transformer.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tc.save_diffusers_layout(ref, tmp / "model")
        pipe = Pipeline.from_folder(tmp / "model", device=args.device, dtype=dtype)
        ref = ref.to(args.device, dtype)
        settings = Settings(steps=p["steps"], schedule="diffusers")
        lines = [PromptLine(i + 1, PROMPTS[i % len(PROMPTS)]) for i in range(M)]  # mixed prompts
        jobs = expand(lines, 1000, steps=p["steps"], guidance=5.0, truncation=1.0, num_images=1)
        prompts = [j.prompt for j in jobs]
        (tmp / "o").mkdir()

        print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else f'{torch.get_num_threads()} threads'}), "
              f"{str(dtype).removeprefix('torch.')}; transformer {p['layers']} layers x {p['heads'] * p['head_dim']} wide "
              f"({n_params / 1e6:.0f}M params), {p['latent']}x{p['latent']} tokens, {p['codes'] + 1} classes, "
              f"{p['steps']} steps, guidance 5; {M} images per measurement, median of {args.rounds} rounds", flush=True)

        configs = {f"vqgen batch -b 1": lambda: vqgen_run(pipe, jobs, 1, tmp / "o", settings),
                   f"vqgen batch -b {B}": lambda: vqgen_run(pipe, jobs, B, tmp / "o", settings)}
        if not args.no_diffusers:
            configs["diffusers, batch 1"] = lambda: diffusers_run(ref, prompts, 1, p["steps"], args.device)
            configs[f"diffusers, batch {B}"] = lambda: diffusers_run(ref, prompts, B, p["steps"], args.device)
        vqgen_run(pipe, jobs[:B], B, tmp / "o", settings)  # warm-up (kernels, caches, allocator)
        if not args.no_diffusers:
            diffusers_run(ref, prompts[:B], B, p["steps"], args.device)
        rates: dict[str, list[float]] = {k: [] for k in configs}
        images: dict[str, dict] = {}
        for _ in range(args.rounds):
            for name, fn in configs.items():
                start = time.perf_counter()
                out = fn()
                rates[name].append(M / ((time.perf_counter() - start) / 60))
                if out is not None:
                    images[name] = out
        base = statistics.median(rates["vqgen batch -b 1"])
        print(f"{'configuration':<22} {'images/min':>11} {'vs vqgen -b 1':>14}")
        for name, r in rates.items():
            m = statistics.median(r)
            print(f"{name:<22} {m:>11.1f} {m / base:>13.2f}x")
        if not args.no_diffusers:
            d1, dB = statistics.median(rates["diffusers, batch 1"]), statistics.median(rates[f"diffusers, batch {B}"])
            vB = statistics.median(rates[f"vqgen batch -b {B}"])
            print(f"vqgen -b {B} vs diffusers batch {B}: {vB / dB:.2f}x;  vqgen -b 1 vs diffusers batch 1: {base / d1:.2f}x")
        a, b = images["vqgen batch -b 1"], images[f"vqgen batch -b {B}"]
        same = a.keys() == b.keys() and all(a[k] == b[k] for k in a)
        print(f"batching changed no image: {'yes' if same else 'NO'} ({len(a)} images, pixels compared byte for byte)")
        if not same:
            diff = [k for k in a if a[k] != b.get(k)]
            print(f"  differing: {len(diff)}: {diff[:5]}")


if __name__ == "__main__":
    main()
