"""A VQ-Diffusion model folder -> ready modules (SPEC section 1).

Accepts both layouts: the folder as published for microsoft/vq-diffusion-ithq (fp32 pickles, fp16
safetensors variants, old VAE attention names, "text_model."-prefixed CLIP keys, a "vq_diffusion"
library name in model_index.json, no norm_type in the transformer config) and what diffusers'
save_pretrained writes today. Modules are built on the meta device and the weights assigned
straight in their final dtype and device, so no second copy of the weights ever exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import ScheduleConfig, TransformerConfig, VQVAEConfig, read_json
from .errors import CheckpointError
from .converted import Converted, converted_weights
from .kernels import Plan, apply_plan, plan_for, weight_dtype
from .layout import NULL_FOLDER, PIPELINE_CLASS
from .schedule import Chain, NoiseSchedule
from .text_encoder import TextEncoder
from .transformer import DiscreteTransformer
from .vqvae import VQVAE


@dataclass
class Components:
    text_encoder: TextEncoder
    transformer: DiscreteTransformer
    vqvae: VQVAE
    schedule: NoiseSchedule
    weight_files: dict[str, str]  # component -> file actually read
    converted: Converted = Converted("none")  # the transformer's converted weights: made, read or written (converted.py)


def check_model_folder(folder: Path) -> dict:
    """model_index.json of a VQ-Diffusion folder, or a one-line error saying what is wrong."""
    if not folder.exists():
        raise CheckpointError(f"model folder {folder} does not exist; pass a VQ-Diffusion model folder or a Hub repo id")
    if not folder.is_dir():
        raise CheckpointError(f"model {folder} is a file, not a folder; pass the folder that holds model_index.json")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise CheckpointError(f"model folder {folder} is not readable; check its permissions")
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise CheckpointError(f"{folder} is not a VQ-Diffusion model folder: model_index.json is missing")
    index = read_json(index_path, "model_index.json")
    if index.get("_class_name") != PIPELINE_CLASS:
        raise CheckpointError(f"{folder} holds a {index.get('_class_name')!r}, not a {PIPELINE_CLASS}; vqgen runs VQ-Diffusion models only")
    return index


def legacy_special_tokens(tok_dir: Path) -> dict:
    """The special tokens of an old-style special_tokens_map.json, ready for from_pretrained.

    Old transformers (as in ITHQ's published tokenizer folder) wrote each special token as
    {"__type": "AddedToken", "content": ...}. transformers 5 hands such a dict, "__type" included,
    to the Rust tokenizers library, which then prints "Ignored unknown kwarg option __type" straight
    to the process's stdout (native code: no Python logger or warning to silence). Passing the same
    tokens ourselves, without the "__type" key, gives the identical tokenizer and no print; a host
    program's stdout is never touched. Empty for current folders (no "__type" entries) and for
    folders whose tokenizer_config.json lists added_tokens_decoder (then the map is not read)."""
    from tokenizers import AddedToken

    config_path, map_path = tok_dir / "tokenizer_config.json", tok_dir / "special_tokens_map.json"
    try:
        config = read_json(config_path, "tokenizer") if config_path.is_file() else {}
        special = read_json(map_path, "tokenizer") if map_path.is_file() else {}
    except CheckpointError:
        return {}  # from_pretrained reports the unreadable file in its own words
    if "added_tokens_decoder" in config:
        return {}
    tokens = {}
    for key, value in special.items():
        if isinstance(value, dict) and value.get("__type") == "AddedToken":
            fields = {k: v for k, v in value.items() if k not in ("__type", "special")}
            tokens[key] = AddedToken(**fields, special=True)  # what transformers makes of the entry
    return tokens


def read_schedule_config(folder: Path) -> ScheduleConfig:
    return ScheduleConfig.from_json(read_json(folder / "scheduler" / "scheduler_config.json", "scheduler"))


def read_chain(folder: Path) -> Chain:
    """The model's usable chain from its two small configs, before any weight is read."""
    transformer = TransformerConfig.from_json(read_json(folder / "transformer" / "config.json", "transformer"))
    return Chain.of(read_schedule_config(folder).num_timesteps, transformer.num_timesteps)


def _build(module_cls, cfg):
    with torch.device("meta"):
        return module_cls(cfg)


# The two networks built by vqgen itself: (config class, module class, checkpoint renaming rules).
NETWORKS = {
    "transformer": (TransformerConfig, DiscreteTransformer, ckpt.TRANSFORMER_RULES),
    "vqvae": (VQVAEConfig, VQVAE, ckpt.VQVAE_RULES),
}


def load_network(folder: Path, component: str, device, file_dtype: torch.dtype, weight_dtype, files: dict):
    """One of NETWORKS from its subfolder: built on the meta device, then the weights assigned in
    place. file_dtype picks the weight file (the widest dtype in play: a bf16 or int8 transformer
    is made from fp32 weights where the folder has them); weight_dtype is the dtype each weight
    gets (a dtype, or a function of the weight's name: kernels.weight_dtype)."""
    config_cls, module_cls, rules = NETWORKS[component]
    sub = folder / component
    model = _build(module_cls, config_cls.from_json(read_json(sub / "config.json", component)))
    path = ckpt.find_weights(sub, ckpt.DIFFUSERS_STEMS, file_dtype, component)
    state = ckpt.rename(ckpt.read_weights(path, component), rules)
    ckpt.assign(model, state, component, path, device, weight_dtype)
    files[component] = str(path)
    return model.eval()


def load_text_encoder(folder: Path, device, dtype, files: dict) -> TextEncoder:
    # transformers is imported here, not at module level: it is the slowest import of all.
    # The tokenizers-backed CLIP tokenizer: in transformers 5 CLIPTokenizer is this class; in
    # transformers 4 only it reads the tokenizer.json that current save_pretrained writes.
    from transformers import CLIPTextConfig, CLIPTextModel
    from transformers import CLIPTokenizerFast as CLIPTokenizer

    sub = folder / "text_encoder"
    tok_dir = folder / "tokenizer"
    has_bpe = (tok_dir / "vocab.json").is_file() and (tok_dir / "merges.txt").is_file()
    if not has_bpe and not (tok_dir / "tokenizer.json").is_file():
        raise CheckpointError(f"tokenizer: {tok_dir} has neither tokenizer.json nor vocab.json + merges.txt; re-download the model")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir, **legacy_special_tokens(tok_dir))
        config = CLIPTextConfig.from_dict(read_json(sub / "config.json", "text_encoder"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"text encoder: cannot read its config or tokenizer ({str(e).splitlines()[0][:100]})") from None
    with torch.device("meta"):
        model = CLIPTextModel(config)
    path = ckpt.find_weights(sub, ckpt.TRANSFORMERS_STEMS, dtype, "text_encoder")
    state = ckpt.rename(ckpt.read_weights(path, "text_encoder"), ckpt.TEXT_RULES)
    # transformers 4 names CLIPTextModel's weights "text_model.*", transformers 5 does not: give the
    # (prefix-free) checkpoint keys whatever prefix this version's module expects.
    prefix = "text_model." if any(k.startswith("text_model.") for k in model.state_dict()) else ""
    state = {prefix + k: v for k, v in state.items()}
    ignored = {prefix + k for k in ckpt.TEXT_IGNORED}
    ckpt.assign(model, state, "text_encoder", path, device, dtype, ignored=ignored)
    # position_ids is a non-persistent buffer: rebuild it where the meta construction left it empty.
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            if not name.endswith("position_ids"):
                raise CheckpointError(f"text_encoder: buffer {name!r} is not in the checkpoint")
            owner = model.get_submodule(name.rsplit(".", 1)[0])
            owner.register_buffer("position_ids", torch.arange(buf.shape[-1], device=device).expand(buf.shape), persistent=False)
    files["text_encoder"] = str(path)
    return TextEncoder(tokenizer, model.eval(), load_learned_null(folder, device, dtype, files))


def load_learned_null(folder: Path, device, dtype, files: dict) -> torch.Tensor | None:
    """The learned (L, E) guidance embedding, or None when the model has none (then CLIP("") is used)."""
    sub = folder / NULL_FOLDER
    if not (sub / "config.json").is_file():
        return None
    cfg = read_json(sub / "config.json", NULL_FOLDER)
    if not cfg.get("learnable", False):
        return None
    path = ckpt.find_weights(sub, ckpt.DIFFUSERS_STEMS, dtype, NULL_FOLDER)
    state = ckpt.read_weights(path, NULL_FOLDER)
    expected = (cfg.get("length"), cfg.get("hidden_size"))
    if set(state) != {"embeddings"} or tuple(state["embeddings"].shape) != expected:
        got = {k: tuple(v.shape) for k, v in state.items()}
        raise CheckpointError(f"{NULL_FOLDER}: {path.name} should hold one tensor 'embeddings' of shape {expected}, found {got}")
    files[NULL_FOLDER] = str(path)
    return state["embeddings"].to(device=device, dtype=dtype)


def load_components(folder: Path, device: torch.device, dtype: torch.dtype, plan: Plan | None = None,
                    cache_converted: bool | None = None) -> Components:
    """The model's modules; the transformer's kernels follow `plan` (default: exact, in dtype), its
    converted weights cached on disk unless cache_converted is False (converted.py)."""
    folder = Path(folder)
    check_model_folder(folder)
    plan = plan or plan_for(device, dtype, exact=True)
    files: dict[str, str] = {}
    schedule = NoiseSchedule(read_schedule_config(folder))
    transformer = load_network(folder, "transformer", device, plan.dtype, lambda key: weight_dtype(plan, key), files)
    blocks, converted = converted_weights(transformer, plan, Path(files["transformer"]), cache_converted)
    apply_plan(transformer, plan, blocks)
    if schedule.num_classes != transformer.cfg.num_classes:
        raise CheckpointError(
            f"scheduler has {schedule.num_classes} classes but the transformer {transformer.cfg.num_classes}; the model folder is inconsistent"
        )
    vqvae = load_network(folder, "vqvae", device, dtype, dtype, files)
    # The transformer predicts codes 0..K-2; a larger codebook is fine (diffusers' own test
    # components have one spare code), its extra codes are just never drawn. A smaller one could
    # not decode what the transformer predicts.
    if vqvae.cfg.num_codes < transformer.cfg.num_classes - 1:
        raise CheckpointError(
            f"vqvae has {vqvae.cfg.num_codes} codes but the transformer predicts {transformer.cfg.num_classes - 1}; the model folder is inconsistent"
        )
    text_encoder = load_text_encoder(folder, device, dtype, files)
    return Components(text_encoder, transformer, vqvae, schedule, files, converted)
