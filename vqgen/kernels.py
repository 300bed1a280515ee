"""How the transformer's arithmetic runs: the reference's (`exact`) or the fastest faithful path for
the device at hand (the default), and opt-in int8.

About 95% of a step is the transformer's Linear layers, so the kernel behind them decides the speed:
- exact: torch's default kernels in the requested dtype, the reference's arithmetic, bit for bit.
- fast (default), chosen from what the device can do, not from what the developer's machine did:
  * a CPU with native bfloat16 (avx512_bf16 or AMX): the transformer in bfloat16 (oneDNN's bf16
    GEMM; 2-4x torch's fp32 GEMM on an AMD Zen 5). Never on a CPU without bf16 units, where it is
    several times slower than float32.
  * other CPUs: float32, with the GEMMs through oneDNN on AMD CPUs (MKL's sgemm takes no AVX-512
    path there) and torch's default (MKL) elsewhere.
  * GPUs: the requested dtype (float16 by default).
  On the CPU the blocks' Linear layers are packed once, q/k/v run as one GEMM and the
  feed-forward's activation is fused into its GEMM (fast_layers.py). Only the GEMMs (and the
  attention between them) run in bfloat16: the residual stream that the blocks add into stays
  float32 (Plan.residual_dtype).
- int8 (`quantize="int8"`, CPU): the blocks' Linear layers with int8 weights (one scale per output
  channel) and activations quantised per token at run time, through oneDNN's int8 GEMM (VNNI
  where the CPU has it); their outputs and the attention in bfloat16 where the CPU has it, over the
  float32 residual stream.
The text encoder, the VQ-VAE and the sampler's maths stay float32 (in the requested dtype) in every
mode: they are a small share of the time, and the sampler's float32 keeps the random draws' meaning.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from . import fast_layers
from .checkpoint import release
from .errors import UsageError

QUANTIZE = ("int8",)


@functools.lru_cache(maxsize=1)
def cpu_features() -> dict:
    """What this CPU offers that decides the kernels (read once per process)."""
    vendor = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    vendor = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cpu = torch.cpu
    probe = lambda name: bool(getattr(cpu, name, lambda: False)())  # noqa: E731 - private, may be absent
    return {
        "vendor": vendor,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": probe("_is_avx512_bf16_supported"),
        "amx": probe("_is_amx_tile_supported"),
        "vnni": probe("_is_vnni_supported"),
        "onednn": torch.backends.mkldnn.is_available(),
        # oneDNN's packed bfloat16 GEMM needs avx512bw/vl/dq or avx_ne_convert (an AVX2-only CPU
        # has neither, and reordering a weight for it raises).
        "onednn_bf16": torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    }


def native_bf16() -> bool:
    f = cpu_features()
    return f["avx512_bf16"] or f["amx"]


def cpu_summary() -> str:
    """The flags the choice was made from, for --verbose, metadata and benchmark tables."""
    f = cpu_features()
    flags = [name for name in ("avx512_bf16", "amx", "vnni") if f[name]]
    return f"{f['vendor'] or 'unknown vendor'} {f['capability']}" + (f" ({', '.join(flags)})" if flags else "")


@dataclass(frozen=True)
class Plan:
    """What runs where; decided once, at load."""

    device: torch.device
    dtype: torch.dtype  # text encoder, VQ-VAE (and the transformer when nothing faster is chosen)
    transformer_dtype: torch.dtype  # the blocks' activations (and weights, but for int8)
    linear: str  # "torch" (default kernels), "onednn" (fp32 through oneDNN), "int8"
    exact: bool
    quantize: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def residual_dtype(self) -> torch.dtype:
        """The blocks' residual stream (embeddings, norms, the sums between layers): float32 where
        the Linear kernels take any input (oneDNN's, int8), so that only the GEMMs' inputs and
        outputs are rounded to bfloat16, never the sum that 36 blocks accumulate into (on the shapes
        yardstick a bfloat16 stream cost 3 points on unseen pairs); torch's own Linear layers need
        their input in their weight's dtype."""
        return self.dtype if self.linear in ("onednn", "int8") else self.transformer_dtype

    @property
    def mode(self) -> str:
        return "exact" if self.exact else (self.quantize or "fast")

    def describe(self) -> str:
        name = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
        kernel = {"torch": "torch default GEMM", "onednn": "oneDNN GEMM", "int8": "int8 weights and dynamic int8 activations"}[self.linear]
        where = cpu_summary() if self.device.type == "cpu" else str(self.device)
        if self.residual_dtype != self.transformer_dtype:
            kernel += f"; {name[self.residual_dtype]} residual stream"
        return (f"{self.mode}: transformer {name[self.transformer_dtype]} ({kernel}), text encoder and VQ-VAE "
                f"{name[self.dtype]}, sampler float32; {where}")


def plan_for(device: torch.device, dtype: torch.dtype | None, *, exact: bool = False, quantize: str | None = None) -> Plan:
    """The kernels for `device`. dtype is the transformer's (None: the device's natural choice, see
    the module doc). Exact runs every component in it, as the reference does; the fast paths keep
    the text encoder and the VQ-VAE in float32 on the CPU, where they cost little."""
    if quantize is not None and quantize not in QUANTIZE:
        raise UsageError(f"unknown quantization {quantize!r}; use one of {', '.join(QUANTIZE)}")
    if exact and quantize:
        raise UsageError("exact and int8 quantization exclude each other (exact is the reference's arithmetic); drop one of them")
    cpu = device.type == "cpu"
    if quantize and not cpu:
        raise UsageError(f"int8 quantization runs on the CPU only; drop it, or use the CPU instead of {device.type}")
    natural = torch.float32 if cpu else torch.float16
    warnings = []
    if cpu and dtype == torch.bfloat16 and not native_bf16():
        warnings.append(f"bfloat16 on this CPU ({cpu_summary()}: no avx512_bf16 or AMX) is several times slower than float32")
    if exact:
        base = dtype or natural
        return Plan(device, base, base, "torch", True, None, tuple(warnings))
    base = torch.float32 if cpu else (dtype or natural)
    block = dtype or (torch.bfloat16 if cpu and native_bf16() else natural)
    if quantize:
        return Plan(device, base, block, "int8", False, quantize, tuple(warnings))
    f = cpu_features()
    # bfloat16 goes to oneDNN wherever oneDNN can run it (packing its weights once saves the
    # per-call reorder); float32 on AMD, where MKL's sgemm takes no AVX-512 path.
    onednn = cpu and f["onednn"] and ((block == torch.bfloat16 and f["onednn_bf16"])
                                      or (block == torch.float32 and f["vendor"] == "AuthenticAMD"))
    return Plan(device, base, block, "onednn" if onednn else "torch", False, None, tuple(warnings))


# Transformer weights (vqgen's names) that the plan's Linear kernels replace (apply_plan).
_BLOCK_LINEAR = re.compile(r"^blocks\.\d+\.(?:attn1\.(?:q|k|v|out)|attn2\.(?:q|out)|ff\.(?:up|down))\.weight$")
_HEAD = ("head.", "norm_out.")
# The AdaLayerNorms' timestep embedding and projection, which non-exact plans turn into tables.
_ADA_NORM = re.compile(r"^blocks\.\d+\.norm[12]\.(?:time|proj)\.")
_TEXT_KV = re.compile(r"^blocks\.\d+\.attn2\.[kv]\.")


def weight_dtype(plan: Plan, key: str) -> torch.dtype | None:
    """The dtype a transformer weight is loaded in; None: as stored. The Linear layers that
    apply_plan replaces stay as stored (memory-mapped): their new form (packed, fused, int8) is
    made from the file's tensor in one conversion, never from a widened or narrowed copy."""
    if plan.linear in ("onednn", "int8") and _BLOCK_LINEAR.match(key):
        return None
    if not plan.exact and _ADA_NORM.match(key):
        return None  # read once into float32 for the timestep tables
    if plan.exact or _TEXT_KV.match(key):
        return plan.transformer_dtype  # the cross-attention's keys and values go into attention as they are
    if key.startswith(_HEAD):
        return plan.dtype  # the logits feed the sampler: keep the head as wide as the rest
    return plan.residual_dtype  # embeddings and the LayerNorms: the residual stream


# The Linear layers each block swaps (all but the cross-attention's k and v, which run once per
# generation, on the text); the names are the converted tensors' prefixes in a block.
_SWAPPED = ("attn1.qkv", "attn1.out", "attn2.q", "attn2.out", "ff.up", "ff.down")


def _linear_kind(plan: Plan):
    """The fast_layers class behind the plan's Linear layers (None: torch's own)."""
    if plan.linear == "onednn":
        return fast_layers.PackedLinear
    if plan.linear == "int8":
        return fast_layers.QuantLinear if fast_layers.onednn_int8_available() else fast_layers.Int8Linear
    return None


@torch.no_grad()  # else each converted weight would keep its float32 intermediates alive for autograd
def convert_block(block: nn.Module, plan: Plan) -> dict[str, torch.Tensor]:
    """A block's weights in the plan's form (the costly half of apply_plan, what converted.py caches):
    the AdaLayerNorms' timestep tables, and each swapped Linear's converted tensors (bfloat16
    weights, or int8 codes and scales) with q/k/v stacked and the feed-forward's 1.702 folded in."""
    dtype = plan.transformer_dtype
    tensors = {f"{name}.table": fast_layers.timestep_table(getattr(block, name)).to(plan.residual_dtype) for name in ("norm1", "norm2")}
    kind = _linear_kind(plan)
    if kind is None:
        return tensors
    up, down = fast_layers.feed_forward_weights(block.ff)
    sources = {"attn1.qkv": fast_layers.q_k_v_weights(block.attn1), "attn1.out": (block.attn1.out.weight, block.attn1.out.bias),
               "attn2.q": (block.attn2.q.weight, block.attn2.q.bias), "attn2.out": (block.attn2.out.weight, block.attn2.out.bias),
               "ff.up": up, "ff.down": down}
    for name in _SWAPPED:
        weight, bias = sources[name]
        tensors.update({f"{name}.{key}": value for key, value in kind.convert(weight, bias, dtype).items()})
    return tensors


def replaced_weights(block: nn.Module, plan: Plan) -> list[torch.Tensor]:
    """The weights of a block (as loaded) that install_block replaces: their pages can go once
    convert_block has read them."""
    norms = [w for norm in (block.norm1, block.norm2) for w in (norm.time.weight, norm.proj.weight, norm.proj.bias)]
    if _linear_kind(plan) is None:
        return norms
    a1, a2, ff = block.attn1, block.attn2, block.ff
    return norms + [m.weight for m in (a1.q, a1.k, a1.v, a1.out, a2.q, a2.out, ff.up, ff.down)]


def install_block(block: nn.Module, tensors: dict[str, torch.Tensor], plan: Plan, batch_hint: int) -> None:
    """Swap a block's modules for the plan's, made from convert_block's tensors (the cheap half:
    packing for the kernel), and release the weights they replace."""
    replaced = replaced_weights(block, plan)
    block.norm1, block.norm2 = (fast_layers.TimestepNorm(tensors[f"{name}.table"], plan.transformer_dtype) for name in ("norm1", "norm2"))
    kind = _linear_kind(plan)
    if kind is not None:
        def make(name, post="none"):
            own = {key.rsplit(".", 1)[1]: value for key, value in tensors.items() if key.rsplit(".", 1)[0] == name}
            return kind(own, batch_hint, post) if kind is fast_layers.PackedLinear else kind(own, plan.transformer_dtype, post)

        attn1 = block.attn1
        block.attn1 = fast_layers.SelfAttention(make("attn1.qkv"), make("attn1.out"), attn1.num_heads, attn1.head_dim)
        block.attn2.q, block.attn2.out = make("attn2.q"), make("attn2.out")
        block.ff = fast_layers.FeedForward(make("ff.up", post="swish"), make("ff.down"))
    for tensor in replaced:
        release(tensor)


def caches_conversion(plan: Plan) -> bool:
    """Whether the plan's converted weights are worth a file on disk (converted.py): bfloat16 and
    int8 weights are a half and a quarter of the float32 file, and making them costs seconds; a
    float32 plan's conversion is a concatenation and a scaling, no cheaper to read back than to redo,
    and a plan on torch's own Linear layers converts only the small timestep tables."""
    return plan.linear == "int8" or (plan.linear == "onednn" and plan.transformer_dtype != torch.float32)


@torch.no_grad()
def apply_plan(transformer: nn.Module, plan: Plan, converted=None) -> nn.Module:
    """Swap the blocks' layers for the plan's kernels (in place; the originals are freed):
    self-attention with one q/k/v GEMM, the feed-forward with its activation fused, the
    cross-attention's q and out, and the AdaLayerNorms as timestep tables (fast_layers). Its k and
    v (run once per generation, on the text) and the output head stay as loaded.
    converted: block index -> that block's convert_block tensors, made earlier (converted.py's
    cache); None converts here."""
    if plan.exact:
        return transformer
    transformer.softmax_dtype = torch.float32
    batch_hint = 2 * transformer.cfg.num_tokens  # guided: [uncond ; cond]
    for i, block in enumerate(transformer.blocks):
        tensors = converted(i) if converted is not None else convert_block(block, plan)
        install_block(block, tensors, plan, batch_hint)
        for tensor in tensors.values():
            release(tensor)  # a cached file's pages, once packed
    return transformer
