"""The discrete diffusion transformer: token ids at step t -> log p(x0 | x_t) (SPEC section 3).

Shapes: B batch, N = H*W tokens, D model width, E text width, L text length, K classes with mask.
Parameter names are vqgen's own; checkpoint.py converts the published names once at load time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TransformerConfig


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine, then scale and shift predicted from the timestep."""

    def __init__(self, dim: int, num_timesteps: int):
        super().__init__()
        self.time = nn.Embedding(num_timesteps, dim)
        self.proj = nn.Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, N, D); t one timestep for the whole batch (0-d) or one per sample (B,)."""
        scale, shift = self.proj(F.silu(self.time(t))).chunk(2, dim=-1)  # (D,) each, or (B, D) each
        if t.dim() == 1:
            scale, shift = scale[:, None], shift[:, None]  # (B, 1, D): every token of a sample
        return F.layer_norm(x, x.shape[-1:], eps=1e-5) * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head softmax attention with biased projections; keys/values may come from the text."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, kv_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.q = nn.Linear(dim, num_heads * head_dim)
        self.k = nn.Linear(kv_dim, num_heads * head_dim)
        self.v = nn.Linear(kv_dim, num_heads * head_dim)
        self.out = nn.Linear(num_heads * head_dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, S, d)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._heads(self.k(source)), self._heads(self.v(source))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, N, _ = x.shape
        k, v = kv if kv is not None else self.keys_values(x)
        y = F.scaled_dot_product_attention(self._heads(self.q(x)), k, v)  # (B, h, N, d)
        return self.out(y.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))


class FeedForward(nn.Module):
    """Linear -> y * sigmoid(1.702 y) (a GELU approximation, not a gated unit) -> Linear."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.up = nn.Linear(dim, inner)
        self.down = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(x)
        return self.down(y * torch.sigmoid(1.702 * y))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        D = cfg.dim
        self.norm1 = AdaLayerNorm(D, cfg.num_timesteps)
        self.attn1 = Attention(D, cfg.num_heads, cfg.head_dim, D)
        self.norm2 = AdaLayerNorm(D, cfg.num_timesteps)
        self.attn2 = Attention(D, cfg.num_heads, cfg.head_dim, cfg.text_dim)
        self.norm3 = nn.LayerNorm(D)
        self.ff = FeedForward(D, cfg.ff_dim)

    def forward(self, h: torch.Tensor, t: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h = self.attn1(self.norm1(h, t)) + h
        h = self.attn2(self.norm2(h, t), text_kv) + h
        return self.ff(self.norm3(h)) + h


class DiscreteTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.token_embedding = nn.Embedding(cfg.num_classes, D)  # includes a learned mask row
        self.row_embedding = nn.Embedding(cfg.height, D)
        self.col_embedding = nn.Embedding(cfg.width, D)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm_out = nn.LayerNorm(D)
        self.head = nn.Linear(D, cfg.num_classes - 1)  # no output for the mask class

    # float64 softmax as the reference: its float32 values are then exactly the reference's. The
    # fast paths (kernels.py) use float32, which differs from it in the last bit at most.
    softmax_dtype = torch.float64

    def text_memory(self, text: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys and values of every block for text (B, L, E). They never change
        between denoising steps, so a generation computes them once."""
        return [block.attn2.keys_values(text.to(block.attn2.k.weight.dtype)) for block in self.blocks]

    def logits(self, ids: torch.Tensor, t: int | torch.Tensor, memory: list) -> torch.Tensor:
        """ids (B, N) -> unnormalised logits of x0 (B, N, K-1), in the head's dtype: the one
        network pass that sampling (through forward) and training (vqgen/demo/train.py) share.
        t: one timestep for the whole batch (an int or a 0-d tensor) or one per sample (B,)."""
        positions = (self.row_embedding.weight[:, None] + self.col_embedding.weight[None, :]).flatten(0, 1)  # (N, D)
        h = self.token_embedding(ids) + positions  # (B, N, D)
        t = torch.as_tensor(t, device=ids.device)
        for block, text_kv in zip(self.blocks, memory):
            h = block(h, t, text_kv)
        # The head may run in a wider dtype than the blocks (kernels.py keeps it float32).
        return self.head(self.norm_out(h.to(self.head.weight.dtype)))

    def forward(self, ids: torch.Tensor, t: int | torch.Tensor, memory: list) -> torch.Tensor:
        """ids (B, N) -> log p(x0 | x_t) (B, K-1, N) in float32."""
        logits = self.logits(ids, t, memory).permute(0, 2, 1)  # (B, K-1, N)
        return F.log_softmax(logits.to(self.softmax_dtype), dim=1).float()
