"""Write vqgen modules as a VQ-Diffusion model folder in the published (diffusers) layout.

The folder is what vqgen's loader reads and what diffusers' classes load: model_index.json, one
subfolder per component with its config.json, weights as fp16 safetensors under the published key
names (the inverse of the renaming rules in vqgen/checkpoint.py), and a CLIP BPE tokenizer.

Also here: the tokenizer of the demo model, a byte-level CLIP BPE whose merges are learned from the
caption words, so every caption word is a single token and any other text still tokenizes (into
bytes), exactly as with the real CLIP vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoint import TRANSFORMER_RULES, VQVAE_RULES, rename
from ..layout import NULL_FOLDER, PIPELINE_CLASS

DIFFUSERS_VERSION = "0.42.1"

# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "!"  # pad "!" = id 0, as in ITHQ


def byte_alphabet() -> list[str]:
    """CLIP's byte -> printable character table, in CLIP's order ("!" first, so it gets id 0)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    return [table[b] for b in order], table


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges (most frequent pair first, ties by the pair itself) until every word is one
    token. Deterministic: the same words always give the same merges."""
    _, table = byte_alphabet()
    seqs = []
    for w in sorted(set(words)):
        chars = [table[b] for b in w.encode("utf-8")]
        chars[-1] += "</w>"
        seqs.append(chars)
    merges = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for s in seqs:
            for pair in zip(s, s[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for i, s in enumerate(seqs):
            out, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and (s[j], s[j + 1]) == best:
                    out.append(s[j] + s[j + 1])
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            seqs[i] = out


def write_tokenizer(folder: Path, words: list[str], max_length: int = 77) -> int:
    """vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json; returns the vocab size."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet, _ = byte_alphabet()
    merges = learn_merges(words)
    tokens = alphabet + [t + "</w>" for t in alphabet] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens) and vocab[PAD] == 0
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2"] + [f"{a} {b}" for a, b in merges]) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": EOS}
    _write_json(folder / "special_tokens_map.json", special)
    _write_json(folder / "tokenizer_config.json", special | {
        "add_prefix_space": False, "do_lower_case": True, "errors": "replace",
        "model_max_length": max_length, "tokenizer_class": "CLIPTokenizer",
    })
    return len(vocab)


def load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


# ---------------------------------------------------------------------------------------------
# Key names: vqgen -> published
# ---------------------------------------------------------------------------------------------

TRANSFORMER_TO_PUBLISHED = [
    (r"^token_embedding\.", "latent_image_embedding.emb."),
    (r"^row_embedding\.", "latent_image_embedding.height_emb."),
    (r"^col_embedding\.", "latent_image_embedding.width_emb."),
    (r"^blocks\.", "transformer_blocks."),
    (r"\.norm([12])\.time\.", r".norm\1.emb."),
    (r"\.norm([12])\.proj\.", r".norm\1.linear."),
    (r"\.attn([12])\.([qkv])\.", r".attn\1.to_\2."),
    (r"\.attn([12])\.out\.", r".attn\1.to_out.0."),
    (r"\.ff\.up\.", ".ff.net.0.proj."),
    (r"\.ff\.down\.", ".ff.net.2."),
    (r"^head\.", "out."),
]

VQVAE_TO_PUBLISHED = [
    (r"\.attentions\.(\d+)\.norm\.", r".attentions.\1.group_norm."),
    (r"\.attentions\.(\d+)\.([qkv])\.", r".attentions.\1.to_\2."),
    (r"\.attentions\.(\d+)\.out\.", r".attentions.\1.to_out.0."),
    (r"\.shortcut\.", ".conv_shortcut."),
    (r"^(encoder\.down_blocks\.\d+)\.conv\.", r"\1.downsamplers.0.conv."),
    (r"^(decoder\.up_blocks\.\d+)\.conv\.", r"\1.upsamplers.0.conv."),
    (r"^codebook\.", "quantize.embedding."),
]


def published_state(state: dict[str, torch.Tensor], to_published, from_published) -> dict[str, torch.Tensor]:
    """Rename to the published names and check that vqgen's loader maps them straight back."""
    out = rename(state, to_published)
    back = rename(out, from_published)
    if set(back) != set(state):
        bad = sorted(set(back) ^ set(state))[:3]
        raise AssertionError(f"key renaming does not round-trip: {bad}")
    return out


# ---------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _save(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous().clone() for k, v in sorted(state.items())}
    save_file(tensors, str(path), metadata={"format": "pt"})


def _head(cls: str) -> dict:
    return {"_class_name": cls, "_diffusers_version": DIFFUSERS_VERSION}


def export_folder(folder: Path, *, transformer, vqvae, text_model, null: torch.Tensor, schedule_cfg,
                  words: list[str], dtype: torch.dtype = torch.float16) -> Path:
    """Write the model folder. Weights go to the fp16 variant names (`*.fp16.safetensors`) when
    dtype is float16, as in the published repo, else to the plain names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".fp16" if dtype == torch.float16 else ""
    tcfg, vcfg = transformer.cfg, vqvae.cfg

    _write_json(folder / "model_index.json", _head(PIPELINE_CLASS) | {
        NULL_FOLDER: ["vq_diffusion", "LearnedClassifierFreeSamplingEmbeddings"],
        "scheduler": ["diffusers", "VQDiffusionScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "transformer": ["diffusers", "Transformer2DModel"],
        "vqvae": ["diffusers", "VQModel"],
    })

    _write_json(folder / "transformer" / "config.json", _head("Transformer2DModel") | {
        "activation_fn": "geglu-approximate", "attention_bias": True, "attention_head_dim": tcfg.head_dim,
        "cross_attention_dim": tcfg.text_dim, "dropout": 0.0, "in_channels": None, "norm_num_groups": 32,
        "norm_type": "ada_norm", "num_attention_heads": tcfg.num_heads, "num_embeds_ada_norm": tcfg.num_timesteps,
        "num_layers": tcfg.num_layers, "num_vector_embeds": tcfg.num_classes, "sample_size": tcfg.height,
    })
    _save(published_state(transformer.state_dict(), TRANSFORMER_TO_PUBLISHED, TRANSFORMER_RULES),
          folder / "transformer" / f"diffusion_pytorch_model{suffix}.safetensors", dtype)

    n = len(vcfg.block_out_channels)
    _write_json(folder / "vqvae" / "config.json", _head("VQModel") | {
        "act_fn": "silu", "block_out_channels": list(vcfg.block_out_channels),
        "down_block_types": ["AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in vcfg.down_attention],
        "in_channels": vcfg.in_channels, "latent_channels": vcfg.latent_channels, "layers_per_block": vcfg.layers_per_block,
        "norm_num_groups": vcfg.norm_groups, "num_vq_embeddings": vcfg.num_codes, "out_channels": vcfg.out_channels,
        "sample_size": tcfg.height * 2 ** (n - 1),
        "up_block_types": ["AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in vcfg.up_attention],
        "vq_embed_dim": vcfg.code_dim,
    })
    _save(published_state(vqvae.state_dict(), VQVAE_TO_PUBLISHED, VQVAE_RULES),
          folder / "vqvae" / f"diffusion_pytorch_model{suffix}.safetensors", dtype)

    s = schedule_cfg
    _write_json(folder / "scheduler" / "scheduler_config.json", _head("VQDiffusionScheduler") | {
        "alpha_cum_end": s.alpha_cum_end, "alpha_cum_start": s.alpha_cum_start, "gamma_cum_end": s.gamma_cum_end,
        "gamma_cum_start": s.gamma_cum_start, "num_train_timesteps": s.num_timesteps, "num_vec_classes": s.num_classes,
    })

    _write_json(folder / NULL_FOLDER / "config.json", _head("LearnedClassifierFreeSamplingEmbeddings") | {
        "hidden_size": null.shape[1], "learnable": True, "length": null.shape[0],
    })
    _save({"embeddings": null}, folder / NULL_FOLDER / f"diffusion_pytorch_model{suffix}.safetensors", dtype)

    text_model.config.save_pretrained(str(folder / "text_encoder"))
    text_state = {k: v for k, v in text_model.state_dict().items() if not k.endswith("position_ids")}
    _save(text_state, folder / "text_encoder" / f"model{suffix}.safetensors", dtype)

    write_tokenizer(folder / "tokenizer", words, max_length=text_model.config.max_position_embeddings)
    return folder


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())

