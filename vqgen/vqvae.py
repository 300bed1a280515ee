"""The VQ-VAE that turns token grids into images and back (SPEC section 4).

decode: tokens (B, N) -> codebook vectors (B, C, H, W) -> post_quant_conv -> Decoder -> image.
encode: image -> Encoder -> quant_conv -> nearest codebook entry -> tokens (for editing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VQVAEConfig

EPS = 1e-6  # every GroupNorm in this VAE


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=EPS)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.shortcut(x) if self.shortcut is not None else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with a residual connection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=EPS)
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(channels, channels)
        self.v = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x.view(B, C, H * W)).transpose(1, 2)  # (B, HW, C)
        q, k, v = (proj(h).view(B, -1, 1, C).transpose(1, 2) for proj in (self.q, self.k, self.v))  # (B, 1, HW, C)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, -1, C)
        return self.out(y).transpose(1, 2).reshape(B, C, H, W) + x


class Level(nn.Module):
    """One resolution of the encoder or decoder: resnets, each optionally followed by attention,
    then an optional resampling conv."""

    def __init__(self, cin: int, cout: int, layers: int, attention: bool, groups: int, resample: str | None):
        super().__init__()
        self.resnets = nn.ModuleList(ResBlock(cin if i == 0 else cout, cout, groups) for i in range(layers))
        self.attentions = nn.ModuleList(AttnBlock(cout, groups) for _ in range(layers)) if attention else None
        self.resample = resample
        self.conv = nn.Conv2d(cout, cout, 3, stride=2 if resample == "down" else 1, padding=0 if resample == "down" else 1) if resample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(x)
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.resample == "up":
            x = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        elif self.resample == "down":
            x = self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as trained
        return x


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResBlock(channels, channels, groups), ResBlock(channels, channels, groups)])
        self.attentions = nn.ModuleList([AttnBlock(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch = list(reversed(cfg.block_out_channels))
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], g)
        self.up_blocks = nn.ModuleList(
            Level(ch[max(i - 1, 0)], c, cfg.layers_per_block + 1, cfg.up_attention[i], g, "up" if i < len(ch) - 1 else None)
            for i, c in enumerate(ch)
        )
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=EPS)
        self.conv_out = nn.Conv2d(ch[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            x = level(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch = list(cfg.block_out_channels)
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            Level(ch[max(i - 1, 0)], c, cfg.layers_per_block, cfg.down_attention[i], g, "down" if i < len(ch) - 1 else None)
            for i, c in enumerate(ch)
        )
        self.mid_block = MidBlock(ch[-1], g)
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=EPS)
        self.conv_out = nn.Conv2d(ch[-1], cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down_blocks:
            x = level(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class VQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig, with_encoder: bool = True):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg) if with_encoder else None
        self.quant_conv = nn.Conv2d(cfg.latent_channels, cfg.code_dim, 1) if with_encoder else None
        self.codebook = nn.Embedding(cfg.num_codes, cfg.code_dim)
        self.post_quant_conv = nn.Conv2d(cfg.code_dim, cfg.latent_channels, 1)
        self.decoder = Decoder(cfg)

    def decode(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """tokens (B, N) -> images (B, 3, H*s, W*s) in [-1, 1] (not clamped)."""
        z = self.codebook(tokens).view(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()
        return self.decoder(self.post_quant_conv(z))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> tokens (B, N) of the nearest codebook entries."""
        if self.encoder is None:
            raise RuntimeError("this VQVAE was loaded without its encoder")
        z = self.quant_conv(self.encoder(images))  # (B, C, h, w)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return torch.cdist(flat, self.codebook.weight).argmin(dim=1).view(z.shape[0], -1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounding as the reference does."""
    x = (images.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    return (x * 255).round().to(torch.uint8)
