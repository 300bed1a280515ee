"""Model configurations as small dataclasses, read from the checkpoint's diffusers-style JSON.

Only the architecture that VQ-Diffusion checkpoints actually use is accepted; anything else is a
CheckpointError naming the component and the setting, rather than a silently different network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError


def read_json(path: Path, component: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{component}: {path} is missing; is this a complete VQ-Diffusion model folder?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{component}: cannot read {path} ({e}); re-download the model") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{component}: {path} is not a JSON object; re-download the model")
    return data


def _require(component: str, cfg: dict, key: str, expected) -> None:
    value = cfg.get(key, expected)
    if value != expected:
        raise CheckpointError(f"{component}: unsupported {key}={value!r} (vqgen implements {expected!r})")


def _transformer_norm_type(cfg: dict) -> str:
    """The norm_type the blocks really have. diffusers' legacy spelling: "layer_norm" (its default,
    which its save_pretrained writes for every Transformer2DModel built without an explicit
    norm_type) next to a num_embeds_ada_norm means AdaLayerNorm blocks, and diffusers builds them
    so. Without num_embeds_ada_norm, "layer_norm" means plain LayerNorm blocks: refused."""
    norm = cfg.get("norm_type", "ada_norm")
    if norm == "layer_norm" and cfg.get("num_embeds_ada_norm") is not None:
        return "ada_norm"
    return norm


@dataclass(frozen=True)
class TransformerConfig:
    num_classes: int = 4097  # K: real codes plus the mask class (the last one)
    height: int = 32  # latent side in tokens
    width: int = 32
    num_heads: int = 16
    head_dim: int = 88
    num_layers: int = 36
    text_dim: int = 512  # width of the CLIP hidden states used as cross-attention memory
    num_timesteps: int = 100  # rows of the AdaLayerNorm timestep embedding
    ff_inner_dim: int | None = None  # None: 4 * dim

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def ff_dim(self) -> int:
        return self.ff_inner_dim or 4 * self.dim

    @property
    def num_tokens(self) -> int:
        return self.height * self.width

    @property
    def mask_id(self) -> int:
        return self.num_classes - 1

    @classmethod
    def from_json(cls, cfg: dict) -> TransformerConfig:
        c = "transformer"
        if cfg.get("num_vector_embeds") is None:
            raise CheckpointError(f"{c}: config has no num_vector_embeds; this is not a discrete VQ-Diffusion transformer")
        # ITHQ's config predates "norm_type"; its blocks are AdaLayerNorm blocks.
        norm = _transformer_norm_type(cfg)
        if norm != "ada_norm":
            raise CheckpointError(f"{c}: unsupported norm_type={norm!r} (vqgen implements 'ada_norm')")
        timesteps = cfg.get("num_embeds_ada_norm")
        if not isinstance(timesteps, int) or timesteps < 1:
            raise CheckpointError(f"{c}: num_embeds_ada_norm={timesteps!r}; a VQ-Diffusion transformer needs its number of timesteps")
        _require(c, cfg, "activation_fn", "geglu-approximate")
        _require(c, cfg, "attention_bias", True)
        _require(c, cfg, "only_cross_attention", False)
        _require(c, cfg, "double_self_attention", False)
        side = cfg["sample_size"]
        return cls(
            num_classes=cfg["num_vector_embeds"],
            height=side,
            width=side,
            num_heads=cfg["num_attention_heads"],
            head_dim=cfg["attention_head_dim"],
            num_layers=cfg["num_layers"],
            text_dim=cfg["cross_attention_dim"],
            num_timesteps=timesteps,
            ff_inner_dim=cfg.get("ff_inner_dim"),
        )


@dataclass(frozen=True)
class VQVAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (64, 128, 256, 512)
    # Which encoder / decoder blocks carry attention (ITHQ: only the deepest level).
    down_attention: tuple[bool, ...] = (False, False, False, True)
    up_attention: tuple[bool, ...] = (True, False, False, False)
    layers_per_block: int = 2
    latent_channels: int = 256
    num_codes: int = 4096
    code_dim: int = 128
    norm_groups: int = 32

    @property
    def scale(self) -> int:
        """Pixels per latent token along each side."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_json(cls, cfg: dict) -> VQVAEConfig:
        c = "vqvae"
        _require(c, cfg, "act_fn", "silu")
        _require(c, cfg, "norm_type", "group")
        _require(c, cfg, "mid_block_add_attention", True)
        down_kinds = {"DownEncoderBlock2D": False, "AttnDownEncoderBlock2D": True}
        up_kinds = {"UpDecoderBlock2D": False, "AttnUpDecoderBlock2D": True}
        try:
            down = tuple(down_kinds[b] for b in cfg["down_block_types"])
            up = tuple(up_kinds[b] for b in cfg["up_block_types"])
        except KeyError as e:
            raise CheckpointError(f"{c}: unsupported block type {e.args[0]!r}") from None
        blocks = tuple(cfg["block_out_channels"])
        if not (len(down) == len(up) == len(blocks)):
            raise CheckpointError(f"{c}: block lists of different lengths in config.json")
        return cls(
            in_channels=cfg.get("in_channels", 3),
            out_channels=cfg.get("out_channels", 3),
            block_out_channels=blocks,
            down_attention=down,
            up_attention=up,
            layers_per_block=cfg["layers_per_block"],
            latent_channels=cfg["latent_channels"],
            num_codes=cfg["num_vq_embeddings"],
            code_dim=cfg.get("vq_embed_dim") or cfg["latent_channels"],
            norm_groups=cfg.get("norm_num_groups", 32),
        )


@dataclass(frozen=True)
class ScheduleConfig:
    num_timesteps: int = 100  # T
    num_classes: int = 4097  # K
    alpha_cum_start: float = 0.99999
    alpha_cum_end: float = 0.000009
    gamma_cum_start: float = 0.000009
    gamma_cum_end: float = 0.99999

    @classmethod
    def from_json(cls, cfg: dict) -> ScheduleConfig:
        defaults = cls()
        return cls(
            num_timesteps=cfg.get("num_train_timesteps", defaults.num_timesteps),
            num_classes=cfg["num_vec_classes"],
            alpha_cum_start=cfg.get("alpha_cum_start", defaults.alpha_cum_start),
            alpha_cum_end=cfg.get("alpha_cum_end", defaults.alpha_cum_end),
            gamma_cum_start=cfg.get("gamma_cum_start", defaults.gamma_cum_start),
            gamma_cum_end=cfg.get("gamma_cum_end", defaults.gamma_cum_end),
        )


# Named presets, for benchmarks and documentation: the published model's shapes.
ITHQ_TRANSFORMER = TransformerConfig()
ITHQ_VQVAE = VQVAEConfig()
ITHQ_SCHEDULE = ScheduleConfig()
