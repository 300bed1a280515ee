"""The layers the fast modes swap into the transformer's blocks (kernels.apply_plan decides which).

About 95% of a step is the blocks' Linear layers, so these are the step's speed:
- PackedLinear: weights packed once into oneDNN's blocked layout, float32 or bfloat16, with the
  activation fused into the GEMM where a Linear is followed by one.
- QuantLinear: int8 weights (one scale per output channel), activations quantised per token at run
  time, oneDNN's u8 x s8 GEMM.
- Int8Linear: the same arithmetic through torch._int_mm, for builds without oneDNN's int8 linear.
- SelfAttention: q, k and v of a block's self-attention as one GEMM (one pass over the input).
- FeedForward: y * sigmoid(1.702 y) = silu(1.702 y) / 1.702, so the up projection is scaled by
  1.702 and fused with oneDNN's swish, and the down projection absorbs the 1 / 1.702.
None of this is the reference's arithmetic: `exact` keeps the model's own modules.
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

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, batch_hint: int, post: str = "none"):
        super().__init__()
        self.out_features, self.post = weight.shape[0], post
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(weight.to(dtype).contiguous(), batch_hint), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.to(dtype).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.weight, self.bias, self.post, [], "")


def _int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_q int8 (N, K), scale (N,)): symmetric, 127 levels per output channel."""
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
    return torch.round(w / scale[:, None]).to(torch.int8), scale


class QuantLinear(nn.Module):
    """y = post(q(x) @ W_q.T * s_x * s_W + b) through oneDNN's u8 x s8 GEMM.

    x is quantised per token (one scale per row, symmetric, stored as uint8 around 128): per-tensor
    scales, the only kind oneDNN's int8 linear takes, cost 3-20x more KL on a trained model (the
    shapes demo). So the GEMM runs with a unit activation scale and the row scales, bias and
    activation follow in one pass over the output (plus one for swish). A token's result never
    depends on the rest of the batch: the int32 accumulation is exact. Without VNNI, x gets 7 bits
    (codes 1..127): the AVX2 u8 x s8 instruction adds pairs of products in saturating int16."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype, post: str = "none", *,
                 levels: int | None = None):
        super().__init__()
        levels = levels or activation_levels()
        self.out_features, self.post, self.out_dtype, self.levels = weight.shape[0], post, out_dtype, levels
        w_q, scale = _int8_per_channel(weight)
        self.register_buffer("weight", torch.ops.onednn.qlinear_prepack(w_q, None), persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("zero", torch.zeros(w_q.shape[0], dtype=torch.long), persistent=False)
        self.register_buffer("bias", torch.zeros(w_q.shape[0]) if bias is None else bias.float().clone(), persistent=False)
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

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype, post: str = "none"):
        super().__init__()
        self.out_features, self.post, self.out_dtype = weight.shape[0], post, out_dtype
        w_q, scale = _int8_per_channel(weight)
        self.register_buffer("weight_t", w_q.t().contiguous(), persistent=False)  # (K, N)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.float().clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        x_scale = x2.abs().amax(dim=1, keepdim=True).float().clamp_(min=1e-12) / 127  # (M, 1)
        q = torch.round(x2 / x_scale).clamp_(-127, 127).to(torch.int8)
        y = torch._int_mm(q, self.weight_t).float().mul_(x_scale).mul_(self.scale)
        if self.bias is not None:
            y.add_(self.bias)
        if self.post == "swish":
            y = F.silu(y)
        return y.to(self.out_dtype).view(*shape[:-1], -1)


class SelfAttention(nn.Module):
    """A block's self-attention (transformer.Attention, kv=None) with q, k, v as one GEMM."""

    def __init__(self, attn: nn.Module, make):
        super().__init__()
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        weight = torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]).float()
        bias = torch.cat([attn.q.bias, attn.k.bias, attn.v.bias]).float()
        self.qkv = make(weight, bias)
        self.out = make(attn.out.weight, attn.out.bias)

    def forward(self, x: torch.Tensor, kv=None) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, d)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))


class FeedForward(nn.Module):
    """transformer.FeedForward with the 1.702 folded into the weights and the activation fused."""

    def __init__(self, ff: nn.Module, make):
        super().__init__()
        self.up = make(ff.up.weight.float() * GELU_APPROX, ff.up.bias.float() * GELU_APPROX, post="swish")
        self.down = make(ff.down.weight.float() / GELU_APPROX, ff.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.up(x))
