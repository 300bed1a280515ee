"""Train the bundled demo model (`vqgen train-demo`): a small VQ-Diffusion model on the synthetic
shapes dataset (vqgen/demo/shapes.py), built from vqgen's own modules.

Stage A, the VQ-VAE: 64x64 images -> 8x8 tokens from a codebook of 256 entries. Loss: L1 + MSE
reconstruction, codebook and commitment terms (weight 0.25) through a straight-through
estimator; the codebook starts from encoder outputs and codes unused for a while are restarted on
random encoder outputs (so few codes stay dead).

Stage B, the text encoder and the discrete transformer, trained together on the tokens of a fixed,
seeded set of images (seen colour/shape pairs only), with random caption phrasings, 10% of
captions replaced by the learned null embedding (so classifier-free guidance works) and the
standard 100-step schedule of vqgen/schedule.py.

The objective. The forward process is exactly the model's: a token is masked with probability
ctt[t], replaced by a uniformly drawn real class with probability (K-1) btt[t], else kept. With
this schedule att + ctt = 1 - 1e-6, so btt is ~4e-9: the chain is an absorbing (mask) chain in all
but name. Then q(x_{t-1} | x_t, x0) is a point mass for unmasked tokens, and for a masked token a
mixture of x0 (with probability (ctt[t] - ctt[t-1]) / ctt[t]) and the mask, so the VQ-Diffusion
KL term of step t is that probability times the cross-entropy -log p(x0 | x_t), plus a constant.
The paper adds an auxiliary x0 cross-entropy with weight 5e-4. We train on the x0 cross-entropy of
the corrupted tokens (the same terms, reweighted across timesteps, as that auxiliary loss does),
which trains a toy model much faster, plus the same cross-entropy at the visible tokens, which the
KL terms never constrain but the sampler's last step reads (x0_loss). Sampling then uses vqgen's
exact posterior.

Everything is seeded (torch.manual_seed, a torch Generator for batches, numpy PCG64 for the
dataset) and runs with a fixed number of CPU threads, so a run on the same machine and library
versions reproduces the same weights (CUDA runs are not bit-reproducible). The default
configuration, before the visible-token term, took 58.5 minutes on the two-core development machine
(0.71 s per transformer step at 2 threads; the term adds no measurable time per step) and under
4 minutes on one GPU.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import defaults
from ..config import ScheduleConfig, TransformerConfig, VQVAEConfig
from ..schedule import NoiseSchedule
from ..transformer import DiscreteTransformer
from ..vqvae import VQVAE
from . import shapes
from .export import export_folder, load_tokenizer, write_tokenizer


@dataclass(frozen=True)
class TrainConfig:
    seed: int = defaults.DEMO_TRAIN_SEED
    threads: int = 2
    device: str = "cpu"
    # VQ-VAE (stage A)
    vq_channels: tuple[int, ...] = (16, 32, 64, 64)  # 3 downsamplings: 64 px -> 8x8 tokens
    vq_layers: int = 1
    vq_latent_channels: int = 32
    vq_codes: int = 256
    vq_code_dim: int = 16
    vq_groups: int = 8
    vq_steps: int = 600
    vq_batch: int = 32
    vq_lr: float = 2e-3
    vq_restart_every: int = 25  # dead-code restarts, in the first 70% of stage A
    # Text encoder (CLIP, tiny)
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_ff: int = 256
    text_length: int = 77
    # Transformer (stage B)
    heads: int = 4
    head_dim: int = 48
    layers: int = 4
    dataset_size: int = 24000
    steps: int = 4000
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    caption_dropout: float = 0.1
    partial_captions: float = 0.0  # share of captions that leave one attribute out (shapes.PARTIAL_TEMPLATES)
    visible_loss: float = 1.0  # weight of the cross-entropy at uncorrupted positions (see x0_loss)
    ema: float = 0.998
    time_budget: float | None = None  # seconds for stage B; stops early (then not reproducible)
    log_every: int = 50


SMOKE = TrainConfig(
    vq_channels=(8, 8, 8, 8), vq_latent_channels=8, vq_codes=16, vq_code_dim=4, vq_groups=4, vq_steps=3, vq_batch=4,
    vq_restart_every=1, text_width=16, text_layers=1, text_heads=2, text_ff=32, heads=2, head_dim=8, layers=1,
    dataset_size=16, steps=3, batch=4, warmup=1, log_every=1,
)


def caption_templates(partial: bool) -> tuple[str, ...]:
    return shapes.CAPTION_TEMPLATES + (shapes.PARTIAL_TEMPLATES if partial else ())


def caption_words(partial: bool = False) -> list[str]:
    """Every word of every caption template, colour, shape and position."""
    text = " ".join(caption_templates(partial) + tuple(shapes.COLORS) + shapes.SHAPES + shapes.POSITIONS)
    return sorted(set(re.findall(r"[a-z]+", text.replace("{", " ").replace("}", " "))))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def lr_at(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class Log:
    """Training progress lines, "[  12.3s] message", handed to on_log (nothing is printed here;
    `vqgen train-demo` prints them)."""

    def __init__(self, quiet: bool = False, on_log=None):
        self.start = time.monotonic()
        self.quiet, self.on_log = quiet, on_log

    def __call__(self, message: str) -> None:
        if not self.quiet and self.on_log is not None:
            self.on_log(f"[{time.monotonic() - self.start:7.1f}s] {message}")


# ---------------------------------------------------------------------------------------------
# Stage A: the VQ-VAE
# ---------------------------------------------------------------------------------------------


def vq_config(cfg: TrainConfig) -> VQVAEConfig:
    n = len(cfg.vq_channels)
    return VQVAEConfig(block_out_channels=cfg.vq_channels, down_attention=(False,) * n, up_attention=(False,) * n,
                       layers_per_block=cfg.vq_layers, latent_channels=cfg.vq_latent_channels, num_codes=cfg.vq_codes,
                       code_dim=cfg.vq_code_dim, norm_groups=cfg.vq_groups)


def quantize(vq: VQVAE, x: torch.Tensor):
    """images -> (pre-quantisation latents (M, C), code ids (M,), straight-through latents (B, C, h, w))."""
    z = vq.quant_conv(vq.encoder(x))
    B, C, h, w = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, C)
    codes = vq.codebook.weight
    dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.T + codes.pow(2).sum(1)[None]
    ids = dist.argmin(dim=1)
    q = codes[ids]
    st = flat + (q - flat).detach()
    return flat, ids, q, st.view(B, h, w, C).permute(0, 3, 1, 2)


def train_vqvae(cfg: TrainConfig, log: Log) -> VQVAE:
    device = torch.device(cfg.device)
    vq = VQVAE(vq_config(cfg)).to(device)
    opt = torch.optim.AdamW(vq.parameters(), lr=cfg.vq_lr, betas=(0.9, 0.99), weight_decay=0.0)
    data = shapes.iterate_dataset(cfg.seed + 1, batch_size=cfg.vq_batch)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    usage = torch.zeros(cfg.vq_codes, device=device)
    for step in range(cfg.vq_steps):
        x = to_tensor(next(data)[0]).to(device)
        if step == 0:  # codebook starts as random encoder outputs
            with torch.no_grad():
                flat = vq.quant_conv(vq.encoder(x)).permute(0, 2, 3, 1).reshape(-1, cfg.vq_code_dim)
                pick = torch.randint(len(flat), (cfg.vq_codes,), generator=g).to(device)
                vq.codebook.weight.copy_(flat[pick] + 0.01 * torch.randn(cfg.vq_codes, cfg.vq_code_dim, generator=g).to(device))
        for group in opt.param_groups:
            group["lr"] = cfg.vq_lr * lr_at(step, cfg.vq_steps, min(50, cfg.vq_steps // 10 + 1))
        flat, ids, q, st = quantize(vq, x)
        y = vq.decoder(vq.post_quant_conv(st))
        recon = F.l1_loss(y, x) + F.mse_loss(y, x)
        loss = recon + F.mse_loss(q, flat.detach()) + 0.25 * F.mse_loss(flat, q.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage += torch.bincount(ids, minlength=cfg.vq_codes)
        if (step + 1) % cfg.vq_restart_every == 0:
            dead = (usage == 0).nonzero().flatten()
            if step < 0.7 * cfg.vq_steps and len(dead):
                with torch.no_grad():
                    pick = torch.randint(len(flat), (len(dead),), generator=g).to(device)
                    vq.codebook.weight[dead] = flat.detach()[pick] + 0.01 * torch.randn(len(dead), cfg.vq_code_dim, generator=g).to(device)
            if (step + 1) % (cfg.vq_restart_every * 4) == 0 or step + 1 == cfg.vq_steps:
                log(f"vqvae step {step + 1}/{cfg.vq_steps}  recon {recon.item():.4f}  codes used {(usage > 0).sum().item()}/{cfg.vq_codes}")
            usage.zero_()
    return vq.eval()


@torch.no_grad()
def reconstruction_accuracy(vq: VQVAE, side: int) -> float:
    """Share of canonical shapes (all 90 combinations) the judge reads right after encode + decode."""
    from .judge import judge, score

    specs = [shapes.ShapeSpec(c, s, p, 0.4) for c, s, p in shapes.all_combinations()]
    x = to_tensor(np.stack([shapes.render(s) for s in specs])).to(next(vq.parameters()).device)
    tokens = vq.encode(x)
    images = ((vq.decode(tokens, side, side).float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1) * 255).round().byte().cpu().numpy()
    return float(np.mean([score(s, judge(im)) for s, im in zip(specs, images)]))


# ---------------------------------------------------------------------------------------------
# Stage B: text encoder + transformer
# ---------------------------------------------------------------------------------------------


def make_text_model(cfg: TrainConfig, vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=cfg.text_width, intermediate_size=cfg.text_ff,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.text_length, hidden_act="quick_gelu", projection_dim=cfg.text_width,
        pad_token_id=0, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        attention_dropout=0.0, dropout=0.0,
    )
    return CLIPTextModel(config)


def transformer_config(cfg: TrainConfig, side: int) -> TransformerConfig:
    return TransformerConfig(num_classes=cfg.vq_codes + 1, height=side, width=side, num_heads=cfg.heads,
                             head_dim=cfg.head_dim, num_layers=cfg.layers, text_dim=cfg.text_width, num_timesteps=100)


def x0_loss(logits: torch.Tensor, x0: torch.Tensor, corrupt: torch.Tensor, visible_weight: float) -> torch.Tensor:
    """Mean cross-entropy of x0 at corrupted positions, plus visible_weight times the mean at the
    positions left as they were. The second term teaches the network to give back a visible token:
    the sampler's last step redraws EVERY position from p(x0 | x_1) (SPEC section 6, as the
    reference does), so a network trained on corrupted positions alone re-rolls about half of a
    finished image there (measured: 49% of tokens changed by the last step; 0.1% with this term)."""
    nll = F.cross_entropy(logits.flatten(0, -2).float(), x0.flatten(), reduction="none").view_as(x0)  # (B, N)
    weight = corrupt.float()  # masked sums, not boolean indexing: cheaper backward on CPU
    loss = (nll * weight).sum() / weight.sum()
    if visible_weight:
        loss = loss + visible_weight * (nll * (1 - weight)).sum() / (1 - weight).sum()
    return loss


def encode_text(text_model, ids: torch.Tensor) -> torch.Tensor:
    hidden = text_model(ids).last_hidden_state
    return hidden / hidden.norm(dim=-1, keepdim=True)


@dataclass
class Trained:
    vqvae: VQVAE
    transformer: DiscreteTransformer
    text_model: object
    null: torch.Tensor
    schedule: ScheduleConfig
    words: list[str]
    stats: dict = field(default_factory=dict)


def caption_table(tokenizer, length: int, templates: tuple[str, ...] = shapes.CAPTION_TEMPLATES) -> torch.Tensor:
    """Token ids (90 * templates, L) of every (combination, template) caption, padded like the
    pipeline pads (max_length, no truncation, first L ids)."""
    rows = []
    for color, shape, position in shapes.all_combinations():
        for template in templates:
            text = template.format(color=color, shape=shape, position=position)
            rows.append(tokenizer(text, padding="max_length", max_length=length).input_ids[:length])
    return torch.tensor(rows)


def train(cfg: TrainConfig = TrainConfig(), quiet: bool = False, work_dir: Path | None = None, on_log=None) -> Trained:
    import tempfile

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    log = Log(quiet, on_log)
    device = torch.device(cfg.device)
    stats: dict = {"config": cfg}

    # Stage A
    vq = train_vqvae(cfg, log)
    side = 64 // vq.cfg.scale
    stats["vq_seconds"] = time.monotonic() - log.start
    if cfg.vq_steps >= 100:
        stats["reconstruction_accuracy"] = reconstruction_accuracy(vq, side)
        log(f"vqvae done: judge accuracy of reconstructions {stats['reconstruction_accuracy']:.1%}")
    for p in vq.parameters():
        p.requires_grad_(False)

    # Dataset: a fixed seeded set of seen combinations, tokenised once.
    combos = shapes.all_combinations()
    combo_index = {c: i for i, c in enumerate(combos)}
    specs = shapes.sample_specs(cfg.dataset_size, cfg.seed + 3)
    combo_ids = torch.tensor([combo_index[(s.color, s.shape, s.position)] for s in specs])
    tokens = []
    with torch.no_grad():
        for start in range(0, len(specs), 256):
            chunk = specs[start:start + 256]
            tokens.append(vq.encode(to_tensor(np.stack([shapes.render(s) for s in chunk])).to(device)).cpu())
    tokens = torch.cat(tokens)
    log(f"tokenised {len(specs)} images to {tokens.shape[1]} tokens each; {tokens.unique().numel()} distinct codes")

    # Tokenizer, text encoder, transformer, learned null.
    partial = cfg.partial_captions > 0
    words = caption_words(partial)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = write_tokenizer(Path(tmp), words, cfg.text_length)
        tokenizer = load_tokenizer(Path(tmp))
    templates = caption_templates(partial)
    captions = caption_table(tokenizer, cfg.text_length, templates)
    n_templates, n_full = len(templates), len(shapes.CAPTION_TEMPLATES)
    text_model = make_text_model(cfg, vocab_size).to(device).train()
    tcfg = transformer_config(cfg, side)
    model = DiscreteTransformer(tcfg).to(device).train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight.normal_(0, 0.02)
    null = torch.nn.Parameter(F.normalize(torch.randn(cfg.text_length, cfg.text_width), dim=-1).to(device))
    params = list(model.parameters()) + list(text_model.parameters()) + [null]
    decay = [p for p in params if p.dim() >= 2 and p is not null]
    no_decay = [p for p in params if p.dim() < 2 or p is null]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.99))
    ema = [p.detach().clone() for p in params]
    log(f"transformer {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
        f"text encoder {sum(p.numel() for p in text_model.parameters()) / 1e6:.2f}M, vqvae {sum(p.numel() for p in vq.parameters()) / 1e6:.2f}M")

    schedule_cfg = ScheduleConfig(num_timesteps=100, num_classes=tcfg.num_classes)
    sched = NoiseSchedule(schedule_cfg)
    T, K = schedule_cfg.num_timesteps, tcfg.num_classes
    ctt = torch.tensor(sched.ctt[:T], dtype=torch.float64)
    replace_p = torch.tensor((K - 1) * sched.btt[:T], dtype=torch.float64)
    g = torch.Generator().manual_seed(cfg.seed + 4)
    stage_b = time.monotonic()
    running = None
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_at(step, cfg.steps, cfg.warmup)
        idx = torch.randint(len(tokens), (cfg.batch,), generator=g)
        x0 = tokens[idx]
        template = torch.randint(n_full, (cfg.batch,), generator=g)
        if partial:  # drawn only when used, so that partial_captions=0 keeps the original random stream
            use_partial = torch.rand(cfg.batch, generator=g) < cfg.partial_captions
            template = torch.where(use_partial, n_full + torch.randint(n_templates - n_full, (cfg.batch,), generator=g), template)
        cap = captions[combo_ids[idx] * n_templates + template]
        drop = torch.rand(cfg.batch, generator=g) < cfg.caption_dropout
        t = torch.randint(T, (cfg.batch,), generator=g)
        r = torch.rand(x0.shape, generator=g, dtype=torch.float64)
        masked = r < ctt[t][:, None]
        replaced = ~masked & (r < (ctt[t] + replace_p[t])[:, None])
        xt = torch.where(masked, K - 1, torch.where(replaced, torch.randint(K - 1, x0.shape, generator=g), x0))
        corrupt = masked | replaced

        text = encode_text(text_model, cap.to(device))
        text = torch.where(drop.to(device)[:, None, None], null[None], text)
        logits = model.logits(xt.to(device), t.to(device), model.text_memory(text))  # a timestep per sample
        loss = x0_loss(logits, x0.to(device), corrupt.to(device), cfg.visible_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            d = min(cfg.ema, (1 + step) / (10 + step))
            for e, p in zip(ema, params):
                e.mul_(d).add_(p.detach(), alpha=1 - d)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        elapsed = time.monotonic() - stage_b
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            eta = elapsed / (step + 1) * (cfg.steps - step - 1)
            log(f"transformer step {step + 1}/{cfg.steps}  loss {running:.4f}  ({elapsed / (step + 1):.2f}s/step, {eta / 60:.1f} min left)")
        if cfg.time_budget is not None and elapsed > cfg.time_budget:
            log(f"time budget of {cfg.time_budget:.0f}s reached after {step + 1} steps; stopping early")
            break
    stats["steps_done"] = step + 1
    stats["final_loss"] = running
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    stats["seconds"] = time.monotonic() - log.start
    log(f"training done in {stats['seconds'] / 60:.1f} min")
    return Trained(vq, model.eval(), text_model.eval(), null.detach(), schedule_cfg, words, stats)


def save(trained: Trained, folder: Path, dtype: torch.dtype = torch.float16) -> Path:
    return export_folder(Path(folder), transformer=trained.transformer.cpu(), vqvae=trained.vqvae.cpu(),
                         text_model=trained.text_model.cpu(), null=trained.null.cpu(),
                         schedule_cfg=trained.schedule, words=trained.words, dtype=dtype)


def quick_accuracy(folder: Path, unseen: bool = False, seeds: int = 1, device: str = "cpu") -> float:
    """Judge accuracy on canonical captions of seen (or unseen) combinations at the bundled model's
    recommended settings, one batch per seed."""
    from ..bundled import BUNDLED
    from ..pipeline import Pipeline, Settings
    from ..settings import model_recommended
    from .judge import judge, score

    pipe = Pipeline.from_folder(folder, device=device, dtype="float32")
    combos = shapes.unseen_combinations() if unseen else shapes.seen_combinations()
    prompts = [shapes.canonical_caption(*c) for c in combos]
    right = 0
    for s in range(seeds):
        gen = pipe.generate(prompts, [1000 * s + i for i in range(len(prompts))], Settings(**model_recommended(BUNDLED["shapes"])))
        right += sum(score(c, judge(im)) for c, im in zip(combos, gen.images))
    return right / (len(prompts) * seeds)


def main(output: Path, cfg: TrainConfig = TrainConfig(), evaluate: bool = True, quiet: bool = False, on_log=None) -> Trained:
    """Train, save to output, and (evaluate) judge the result; progress lines go to on_log."""
    trained = train(cfg, quiet=quiet, on_log=on_log)
    save(trained, output)
    if evaluate and not quiet and on_log is not None:
        seen, unseen = quick_accuracy(output), quick_accuracy(output, unseen=True, seeds=4)
        on_log(f"accuracy at the recommended settings: seen combinations {seen:.1%} (80 images), "
               f"unseen {unseen:.1%} (40 images)")
    return trained
