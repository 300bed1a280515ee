"""The layers the fast modes swap into the transformer's blocks (kernels.apply_plan decides which).

About 95% of a step is the blocks' Linear layers, so these are the step's speed:
- PackedLinear: weights packed once into oneDNN's blocked layout, float32 or bfloat16, with the
  activation fused into the GEMM where a Linear is followed by one.
- QuantLinear: int8 weights (one scale per output channel), activations quantised per token at run
  time, oneDNN's u8 x s8 GEMM.
- Int8Linear: the same arithmetic through torch._int_mm, for builds without oneDNN's int8 linear.
- SelfAttention: q, k and v of a block's self-attention as one GEMM (one pass over the input).
- TimestepNorm: an AdaLayerNorm whose scale and shift are read from a table made once for every
  timestep: its embedding and projection (1.1 GB of ITHQ's float32 weights, touched every step)
  become 0.1 GB, and a step skips 72 matrix-vector products.
- FeedForward: y * sigmoid(1.702 y) = silu(1.702 y) / 1.702, so the up projection is scaled by
  1.702 and fused with oneDNN's swish, and the down projection absorbs the 1 / 1.702.
None of this is the reference's arithmetic: `exact` keeps the model's own modules.

Each Linear kind has two halves: `convert(weight, bias, dtype)`, the costly part, whose tensors
(bfloat16 weights, int8 codes and scales) are what converted.py caches on disk; and the
constructor, which only packs those tensors for its kernel (copying them, so that a memory-mapped
source can be released). `from_float` is both in one call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GELU_APPROX = 1.702  # the feed-forward's y * sigmoid(1.702 y)


def onednn_int8_available() -> bool:
    return hasattr(torch.ops.onednn, "qlinear_pointwise") and hasattr(torch.ops.onednn, "qlinear_prepack")


def activation_levels() -> int:
    """Levels each side of zero for QuantLinear's activations on this CPU: 127 with VNNI, else 63
    (AVX2's u8 x s8 instruction adds pairs of products in saturating int16: 2 x 127 x 127 fits,
    2 x 255 x 127 does not)."""
    return 127 if bool(getattr(torch.cpu, "_is_vnni_supported", lambda: False)()) else 63


class PackedLinear(nn.Module):
    """y = post(x @ W.T + b) with W packed once for oneDNN (float32 or bfloat16)."""

    @staticmethod
    def convert(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        tensors = {"weight": weight.to(dtype).contiguous()}
        if bias is not None:
            tensors["bias"] = bias.to(dtype)
        return tensors

    @classmethod
    def from_float(cls, weight, bias, dtype: torch.dtype, batch_hint: int, post: str = "none") -> PackedLinear:
        return cls(cls.convert(weight, bias, dtype), batch_hint, post)

    def __init__(self, tensors: dict[str, torch.Tensor], batch_hint: int, post: str = "none"):
        super().__init__()
        weight, bias = tensors["weight"], tensors.get("bias")
        self.out_features, self.post = weight.shape[0], post
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch_hint), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight.dtype).contiguous()  # a float32 residual stream into a bfloat16 GEMM
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.post, [], "")


def quantize_weight(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The int8 layers' tensors: codes int8 (N, K) and scale (N,), symmetric, 127 levels per output
    channel; bias float32 (zeros when the Linear has none). dtype is unused: the int8 layers keep
    their scales and bias in float32 whatever they output."""
    w = weight.float()
    scale = torch.linalg.vector_norm(w, float("inf"), dim=1).clamp_(min=1e-12) / 127  # max |w|, one pass, no copy
    codes = torch.div(w, scale[:, None]).round_().to(torch.int8)
    return {"codes": codes, "scale": scale, "bias": torch.zeros(codes.shape[0]) if bias is None else bias.float()}


class QuantLinear(nn.Module):
    """y = post(q(x) @ W_q.T * s_x * s_W + b) through oneDNN's u8 x s8 GEMM.

    x is quantised per token (one scale per row, symmetric, stored as uint8 around 128): per-tensor
    scales, the only kind oneDNN's int8 linear takes, cost 3-20x more KL on a trained model (the
    shapes demo). So the GEMM runs with a unit activation scale and the row scales, bias and
    activation follow in one pass over the output (plus one for swish). A token's result never
    depends on the rest of the batch: the int32 accumulation is exact. Without VNNI, x gets 7 bits
    (codes 1..127): the AVX2 u8 x s8 instruction adds pairs of products in saturating int16."""

    convert = staticmethod(quantize_weight)

    @classmethod
    def from_float(cls, weight, bias, out_dtype: torch.dtype, post: str = "none", *, levels: int | None = None) -> QuantLinear:
        return cls(cls.convert(weight, bias), out_dtype, post, levels=levels)

    def __init__(self, tensors: dict[str, torch.Tensor], out_dtype: torch.dtype, post: str = "none", *, levels: int | None = None):
        super().__init__()
        levels = levels or activation_levels()
        codes = tensors["codes"]
        self.out_features, self.post, self.out_dtype, self.levels = codes.shape[0], post, out_dtype, levels
        self.register_buffer("weight", torch.ops.onednn.qlinear_prepack(codes.contiguous(), None), persistent=False)
        self.register_buffer("scale", tensors["scale"].clone(), persistent=False)
        self.register_buffer("zero", torch.zeros(codes.shape[0], dtype=torch.long), persistent=False)
        self.register_buffer("bias", tensors["bias"].clone(), persistent=False)
        self.zero_point = levels + 1  # uint8 codes 1 .. 2 * levels + 1
        self.register_buffer("center", torch.tensor(self.zero_point + 0.5), persistent=False)  # +0.5: rounds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        x_scale = x2.abs().amax(dim=1, keepdim=True).float().clamp_(min=1e-12) / self.levels  # (M, 1)
        # x / s + zero point + 0.5, truncated by the uint8 cast: round half up.
        q = torch.addcdiv(self.center, x2, x_scale, out=torch.empty(x2.shape)).to(torch.uint8)
        acc = torch.ops.onednn.qlinear_pointwise(q, 1.0, self.zero_point, self.weight, self.scale, self.zero, None, 1.0, 0,
                                                 torch.float32, "none", [], "")  # (q - zero point) @ W_q.T * s_W
        y = torch.addcmul(self.bias, acc, x_scale, out=torch.empty(acc.shape, dtype=self.out_dtype))
        if self.post == "swish":
            y = F.silu(y, inplace=True)
        return y.view(*x.shape[:-1], self.out_features)


class Int8Linear(nn.Module):
    """y = post((q(x) @ q(W).T) * s_x * s_W + b): W quantised once per output channel, x per token
    at run time (symmetric, 127 levels), the product accumulated in int32 by torch._int_mm."""

    convert = staticmethod(quantize_weight)

    @classmethod
    def from_float(cls, weight, bias, out_dtype: torch.dtype, post: str = "none") -> Int8Linear:
        return cls(cls.convert(weight, bias), out_dtype, post)

    def __init__(self, tensors: dict[str, torch.Tensor], out_dtype: torch.dtype, post: str = "none"):
        super().__init__()
        codes = tensors["codes"]
        self.out_features, self.post, self.out_dtype = codes.shape[0], post, out_dtype
        self.register_buffer("weight_t", codes.t().contiguous(), persistent=False)  # (K, N)
        self.register_buffer("scale", tensors["scale"].clone(), persistent=False)
        self.register_buffer("bias", tensors["bias"].clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        x_scale = x2.abs().amax(dim=1, keepdim=True).float().clamp_(min=1e-12) / 127  # (M, 1)
        q = torch.round(x2 / x_scale).clamp_(-127, 127).to(torch.int8)
        y = torch._int_mm(q, self.weight_t).float().mul_(x_scale).mul_(self.scale).add_(self.bias)
        if self.post == "swish":
            y = F.silu(y)
        return y.to(self.out_dtype).view(*shape[:-1], -1)


class SelfAttention(nn.Module):
    """A block's self-attention (transformer.Attention, kv=None) with q, k, v as one GEMM: qkv is
    a Linear of the three weights stacked (q_k_v_weights)."""

    def __init__(self, qkv: nn.Module, out: nn.Module, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.qkv, self.out = qkv, out

    def forward(self, x: torch.Tensor, kv=None) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, d)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))


def q_k_v_weights(attn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """SelfAttention.qkv's (3 D, D) weight and (3 D,) bias, from a transformer.Attention."""
    return (torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]).float(),
            torch.cat([attn.q.bias, attn.k.bias, attn.v.bias]).float())


def feed_forward_weights(ff: nn.Module) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """FeedForward's ((up weight, bias), (down weight, bias)) from a transformer.FeedForward, the
    1.702 folded in: up(x) = 1.702 y, fused with swish, and down divides by 1.702 again."""
    return ((ff.up.weight.float() * GELU_APPROX, ff.up.bias.float() * GELU_APPROX),
            (ff.down.weight.float() / GELU_APPROX, ff.down.bias.float()))


class FeedForward(nn.Module):
    """transformer.FeedForward as up (with swish fused) then down (feed_forward_weights)."""

    def __init__(self, up: nn.Module, down: nn.Module):
        super().__init__()
        self.up, self.down = up, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.up(x))


def timestep_table(norm: nn.Module) -> torch.Tensor:
    """(T, 2 D) float32: an AdaLayerNorm's scale and shift for every timestep, from its weights as
    stored."""
    weight, bias = norm.proj.weight.float(), norm.proj.bias.float()
    return F.linear(F.silu(norm.time.weight.float()), weight, bias)


class TimestepNorm(nn.Module):
    """transformer.AdaLayerNorm with scale and shift looked up, not computed: they depend on the
    timestep only, so proj(silu(embedding(t))) is made once for every t (timestep_table) and the
    embedding and projection are dropped. The norm is taken in x's dtype (the residual stream's)
    and written in out_dtype, the dtype of the layer it feeds."""

    def __init__(self, table: torch.Tensor, out_dtype: torch.dtype | None = None):
        super().__init__()
        self.out_dtype = out_dtype or table.dtype
        self.register_buffer("table", table.clone(), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, N, D); t one timestep for the whole batch (0-d) or one per sample (B,)."""
        scale, shift = self.table[t].chunk(2, dim=-1)  # (D,) each, or (B, D) each
        if t.dim() == 1:
            scale, shift = scale[:, None], shift[:, None]
        normed = F.layer_norm(x, x.shape[-1:], eps=1e-5)
        return torch.addcmul(shift, normed, 1 + scale, out=torch.empty(normed.shape, dtype=self.out_dtype, device=x.device))
