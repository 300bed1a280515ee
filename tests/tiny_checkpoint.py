"""Tiny, deterministic VQ-Diffusion checkpoints for tests.

The real model (microsoft/vq-diffusion-ithq) is ~7 GB and cannot be downloaded here, so tests use a
miniature with the same architecture and the same on-disk quirks (SPEC section 1), built from
random weights with the reference implementation in ``diffusers``/``transformers``. The reference
pipeline then doubles as the oracle that vqgen's own code is compared against.

Everything is a pure function of its arguments (seeded), so two calls give bit-identical weights,
and nothing depends on library initialisation schemes, which change between versions.

Sizes (ITHQ values in brackets): K = 65 classes incl. the mask [4097]; latent side 8 [32], N = 64
[1024]; text width 32 [512], length 77; transformer width 2 heads x 8 = 16 [1408]; T = 100;
image side 16 px [256].
"""

from __future__ import annotations

import json
import tempfile
import unicodedata
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import regex
import torch

# ---------------------------------------------------------------------------------------------
# Sizes of the tiny model
# ---------------------------------------------------------------------------------------------
NUM_CODES = 64  # real VQ codes
NUM_CLASSES = NUM_CODES + 1  # K: codes plus the mask class (index K-1)
LATENT_SIDE = 8
TEXT_WIDTH = 32
TEXT_LENGTH = 77
NUM_TRAIN_TIMESTEPS = 100
IMAGE_SIDE = 16  # LATENT_SIDE * 2: the tiny VQ-VAE has two blocks, i.e. one down/upsampling

# An old diffusers version string, as in the published model_index.json / configs.
ITHQ_DIFFUSERS_VERSION = "0.11.0.dev0"
ITHQ_TRANSFORMERS_VERSION = "4.25.0.dev0"

# ---------------------------------------------------------------------------------------------
# 1. Tokenizer
# ---------------------------------------------------------------------------------------------

# Words the tiny BPE learns as whole tokens. Anything else (other words, non-ASCII text) still
# tokenizes, just into smaller pieces / single bytes, exactly as with the real CLIP vocabulary.
TOKENIZER_WORDS = (
    "a an the of in on at and with is",
    "red blue green yellow white black orange purple",
    "bus car cat dog bird tree house street sky road boat",
    "circle square triangle photo painting picture",
    "top bottom left right center corner middle",
    "big small little over under",
)

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "!"  # ITHQ pads with "!" (id 0), not with <|endoftext|>

# CLIP's pre-tokenizer pattern (openai/CLIP simple_tokenizer.py, also used by transformers).
_CLIP_PAT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


_SPECIALS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
_SPECIAL_SPLIT = "(" + "|".join(regex.escape(t) for t in _SPECIALS) + ")"


@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode char table (so "!" = byte 0x21 comes first)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _train_bpe(words: list[str]) -> list[tuple[str, str]]:
    """Plain BPE training, shared with the demo model's tokenizer (vqgen.demo.export): learning
    the merges, rather than writing them by hand, guarantees they are consistent (every merge joins
    two existing tokens; each training word encodes to one token, checked in the tests)."""
    from vqgen.demo.export import learn_merges

    return learn_merges(words)


@lru_cache(maxsize=None)
def _tiny_vocab_and_merges() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    words = sorted({w for line in TOKENIZER_WORDS for w in line.split()})
    merges = _train_bpe(words)
    # Same construction as CLIP: bytes, bytes + "</w>", one token per merge, then the two specials.
    tokens = list(bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    assert len(set(tokens)) == len(tokens), "a merge produced a duplicate token"
    return tuple((t, i) for i, t in enumerate(tokens)), tuple(merges)


def tiny_vocab() -> dict[str, int]:
    return dict(_tiny_vocab_and_merges()[0])


def tiny_merges() -> list[tuple[str, str]]:
    return list(_tiny_vocab_and_merges()[1])


VOCAB_SIZE = len(_tiny_vocab_and_merges()[0])
BOS_ID = VOCAB_SIZE - 2
EOS_ID = VOCAB_SIZE - 1
PAD_ID = 0


def _added_token(content: str) -> dict:
    # Old transformers (as in the published repo) serialised special tokens this way.
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def write_tiny_clip_tokenizer(folder: Path) -> None:
    """Write vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json (ITHQ style:
    slow-tokenizer files only, no tokenizer.json; pad "!" = id 0)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(tiny_vocab(), ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in tiny_merges()]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    special = {
        "bos_token": _added_token(BOS_TOKEN),
        "eos_token": _added_token(EOS_TOKEN),
        "pad_token": PAD_TOKEN,
        "unk_token": _added_token(EOS_TOKEN),
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    config = {
        "add_prefix_space": False,
        "bos_token": _added_token(BOS_TOKEN),
        "do_lower_case": True,
        "eos_token": _added_token(EOS_TOKEN),
        "errors": "replace",
        "model_max_length": TEXT_LENGTH,
        "name_or_path": "tiny-vq-diffusion/tokenizer",
        "pad_token": PAD_TOKEN,
        "special_tokens_map_file": None,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": _added_token(EOS_TOKEN),
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def reference_clip_tokenize(text: str) -> list[int]:
    """Independent pure-Python CLIP BPE (the openai simple_tokenizer algorithm) on the tiny vocab.

    Returns [BOS, ..., EOS] without padding or truncation. transformers 5 has no slow CLIP
    tokenizer any more (CLIPTokenizerFast is an alias of CLIPTokenizer, backed by `tokenizers`),
    so this is the second opinion. Normalisation is NFC + whitespace collapse + lower case, as in
    transformers; the original also runs ftfy/html.unescape, which is a no-op on ordinary text.
    """
    vocab = tiny_vocab()
    ranks = {m: i for i, m in enumerate(tiny_merges())}
    byte_enc = bytes_to_unicode()
    text = unicodedata.normalize("NFC", text)
    text = regex.sub(r"\s+", " ", text).strip().lower()
    ids = [BOS_ID]
    # Special tokens are cut out of the text before pre-tokenization. That includes the pad token
    # "!": so "wow!!" gives [..., 0, 0], never the byte-level "!</w>" (256). A quirk of ITHQ's
    # choice of pad token, shared by transformers' CLIPTokenizer.
    pieces = []
    for chunk in regex.split(_SPECIAL_SPLIT, text):
        pieces += [chunk] if chunk in _SPECIALS else _CLIP_PAT.findall(chunk)
    for piece in pieces:
        if piece in _SPECIALS:
            ids.append(vocab[piece])
            continue
        word = [byte_enc[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            pairs = list(zip(word, word[1:]))
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            out, j = [], 0
            while j < len(word):
                if j + 1 < len(word) and (word[j], word[j + 1]) == best:
                    out.append(word[j] + word[j + 1])
                    j += 2
                else:
                    out.append(word[j])
                    j += 1
            word = out
        ids.extend(vocab[t] for t in word)
    ids.append(EOS_ID)
    return ids


def load_tiny_tokenizer(folder: Path | None = None):
    """CLIPTokenizer.from_pretrained on the tiny files (written to a temp folder if none given)."""
    from transformers import CLIPTokenizer

    if folder is not None:
        return CLIPTokenizer.from_pretrained(str(folder))
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_clip_tokenizer(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp)


# ---------------------------------------------------------------------------------------------
# 2. Tiny pipeline
# ---------------------------------------------------------------------------------------------


def _randomise_(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with seeded random values.

    Library initialisations leave things that would hide bugs: the learned null embedding starts
    at zero, norm weights at exactly 1 and biases at 0 (so a missing affine or a swapped
    weight/bias goes unnoticed), AdaLayerNorm's projection may start near zero (timestep has no
    effect). So: norm weights ~ 1 +/- 0.1, biases ~ N(0, 0.05), embeddings ~ N(0, 1) (keeps the
    timestep and position signals strong), matrices/convs ~ N(0, 1/fan_in) so activations stay
    O(1) through the tiny depth. Parameters are visited in name order with a private generator,
    so values depend only on the seed.
    """
    g = torch.Generator().manual_seed(seed)
    owners = {}
    for mod_name, mod in module.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            owners[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
    norm_types = (torch.nn.LayerNorm, torch.nn.GroupNorm)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            if p.numel() == 0:
                continue
            owner = owners[name]
            leaf = name.rsplit(".", 1)[-1]
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if isinstance(owner, norm_types):
                value = 1.0 + 0.1 * noise if leaf == "weight" else 0.05 * noise
            elif isinstance(owner, torch.nn.Embedding):
                value = noise
            elif leaf == "bias" or p.dim() == 1:
                value = 0.05 * noise
            else:
                fan_in = p[0].numel()
                value = noise / fan_in**0.5
            p.copy_(value.to(p.dtype))


def _make_text_encoder(seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=TEXT_WIDTH,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TEXT_LENGTH,
        hidden_act="quick_gelu",
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    torch.manual_seed(seed)
    model = CLIPTextModel(config)
    _randomise_(model, seed + 1)
    return model.eval()


def _make_transformer(seed: int):
    from diffusers import Transformer2DModel

    torch.manual_seed(seed)
    model = Transformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        num_vector_embeds=NUM_CLASSES,
        sample_size=LATENT_SIDE,
        num_layers=2,
        cross_attention_dim=TEXT_WIDTH,
        activation_fn="geglu-approximate",
        attention_bias=True,
        num_embeds_ada_norm=NUM_TRAIN_TIMESTEPS,
        norm_type="ada_norm",
        norm_num_groups=32,
        dropout=0.0,
    )
    _randomise_(model, seed + 2)
    # Cross-attention reads unit-norm text vectors (entries ~ 1/sqrt(32)), not unit-variance
    # ones: without this boost the prompt barely moves the output and prompt/null mix-ups in a
    # loader would go unnoticed.
    with torch.no_grad():
        for block in model.transformer_blocks:
            block.attn2.to_k.weight.mul_(TEXT_WIDTH**0.5)
            block.attn2.to_v.weight.mul_(TEXT_WIDTH**0.5)
    return model.eval()


def _make_vqvae(seed: int):
    from diffusers import VQModel

    torch.manual_seed(seed)
    model = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        act_fn="silu",
        latent_channels=16,
        sample_size=IMAGE_SIDE,
        num_vq_embeddings=NUM_CODES,
        norm_num_groups=8,
        vq_embed_dim=8,
    )
    _randomise_(model, seed + 3)
    return model.eval()


def _learned_embeddings_class():
    try:
        from diffusers.pipelines.deprecated.vq_diffusion.pipeline_vq_diffusion import (
            LearnedClassifierFreeSamplingEmbeddings,
        )
    except ImportError:  # older diffusers
        from diffusers.pipelines.vq_diffusion.pipeline_vq_diffusion import (
            LearnedClassifierFreeSamplingEmbeddings,
        )
    return LearnedClassifierFreeSamplingEmbeddings


def _make_learned_embeddings(seed: int, learnable: bool):
    cls = _learned_embeddings_class()
    torch.manual_seed(seed)
    model = cls(learnable=learnable, hidden_size=TEXT_WIDTH, length=TEXT_LENGTH)
    if learnable:
        # Scale ~ a unit-norm text vector's entries times a few, deliberately NOT unit norm, so a
        # loader that wrongly normalises the learned null shows up.
        g = torch.Generator().manual_seed(seed + 4)
        with torch.no_grad():
            model.embeddings.copy_(0.3 * torch.randn(model.embeddings.shape, generator=g))
    return model.eval()


def build_tiny_pipeline(seed: int = 0, learnable: bool = True):
    """A float32 diffusers VQDiffusionPipeline with tiny random components (see module doc)."""
    from diffusers import VQDiffusionPipeline, VQDiffusionScheduler

    pipe = VQDiffusionPipeline(
        vqvae=_make_vqvae(seed),
        text_encoder=_make_text_encoder(seed),
        tokenizer=load_tiny_tokenizer(),
        transformer=_make_transformer(seed),
        scheduler=VQDiffusionScheduler(num_vec_classes=NUM_CLASSES, num_train_timesteps=NUM_TRAIN_TIMESTEPS),
        learned_classifier_free_sampling_embeddings=_make_learned_embeddings(seed, learnable),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------
# 3. Current diffusers layout
# ---------------------------------------------------------------------------------------------


def save_diffusers_layout(pipe, folder: Path) -> Path:
    """`pipe.save_pretrained(folder)`: safetensors fp32, current key names and configs."""
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder


def load_diffusers_layout(folder: Path):
    """Load a save_diffusers_layout folder back into a diffusers VQDiffusionPipeline.

    VQDiffusionPipeline.from_pretrained cannot do it in diffusers 0.42: save_pretrained records
    ["diffusers", "LearnedClassifierFreeSamplingEmbeddings"], a class the top-level package no
    longer exports (AttributeError even when the component is passed in). So load each part.
    """
    from diffusers import Transformer2DModel, VQDiffusionPipeline, VQDiffusionScheduler, VQModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = str(folder)
    pipe = VQDiffusionPipeline(
        vqvae=VQModel.from_pretrained(folder, subfolder="vqvae").eval(),
        text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval(),
        tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        transformer=Transformer2DModel.from_pretrained(folder, subfolder="transformer").eval(),
        scheduler=VQDiffusionScheduler.from_pretrained(folder, subfolder="scheduler"),
        learned_classifier_free_sampling_embeddings=_learned_embeddings_class()
        .from_pretrained(folder, subfolder="learned_classifier_free_sampling_embeddings")
        .eval(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------
# 4. Published ITHQ layout
# ---------------------------------------------------------------------------------------------

# Current diffusers attention names -> names written by the old diffusers that saved ITHQ's fp32
# VQ-VAE. group_norm keeps its name; all weights stay (C, C) linears.
_VQVAE_NEW_TO_OLD = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
_VQVAE_OLD_TO_NEW = {v: k for k, v in _VQVAE_NEW_TO_OLD.items()}
_VQVAE_ATTN_RE = regex.compile(r"^(.*\.attentions\.\d+\.)(to_q|to_k|to_v|to_out\.0|query|key|value|proj_attn)\.(weight|bias)$")


def vqvae_keys_to_old(sd: dict) -> "OrderedDict[str, torch.Tensor]":
    out = OrderedDict()
    for k, v in sd.items():
        m = _VQVAE_ATTN_RE.match(k)
        if m and m.group(2) in _VQVAE_NEW_TO_OLD:
            k = f"{m.group(1)}{_VQVAE_NEW_TO_OLD[m.group(2)]}.{m.group(3)}"
        out[k] = v
    return out


def vqvae_keys_to_new(sd: dict) -> "OrderedDict[str, torch.Tensor]":
    out = OrderedDict()
    for k, v in sd.items():
        m = _VQVAE_ATTN_RE.match(k)
        if m and m.group(2) in _VQVAE_OLD_TO_NEW:
            k = f"{m.group(1)}{_VQVAE_OLD_TO_NEW[m.group(2)]}.{m.group(3)}"
        out[k] = v
    return out


def text_keys_to_old(sd: dict, *, position_ids: bool = True) -> "OrderedDict[str, torch.Tensor]":
    """transformers-5 CLIPTextModel keys (no prefix) -> old `text_model.`-prefixed keys, plus the
    persistent `position_ids` buffer old transformers saved (int64, (1, 77))."""
    out = OrderedDict()
    for k, v in sd.items():
        out[k if k.startswith("text_model.") else "text_model." + k] = v
    if position_ids:
        out["text_model.embeddings.position_ids"] = torch.arange(TEXT_LENGTH, dtype=torch.int64)[None]
    return out


def text_keys_to_new(sd: dict) -> "OrderedDict[str, torch.Tensor]":
    """Inverse of text_keys_to_old: strip the prefix, drop position_ids."""
    out = OrderedDict()
    for k, v in sd.items():
        k = k.removeprefix("text_model.")
        if k != "embeddings.position_ids":
            out[k] = v
    return out


def _plain(sd: dict, dtype: torch.dtype | None = None) -> "OrderedDict[str, torch.Tensor]":
    """Detached, contiguous, own-storage copies (float tensors cast to dtype; int buffers kept)."""
    out = OrderedDict()
    for k, v in sd.items():
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous().clone()
    return out


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _ithq_configs(pipe) -> dict[str, dict]:
    tcfg = pipe.transformer.config
    vcfg = pipe.vqvae.config
    scfg = pipe.scheduler.config
    head = lambda cls: {"_class_name": cls, "_diffusers_version": ITHQ_DIFFUSERS_VERSION}  # noqa: E731
    transformer = head("Transformer2DModel") | {
        # exactly ITHQ's keys: no "norm_type" (old diffusers inferred ada_norm from
        # num_embeds_ada_norm), none of the keys added since.
        k: tcfg[k]
        for k in (
            "activation_fn", "attention_bias", "attention_head_dim", "cross_attention_dim",
            "dropout", "in_channels", "norm_num_groups", "num_attention_heads",
            "num_embeds_ada_norm", "num_layers", "num_vector_embeds", "sample_size",
        )
    }
    vqvae = head("VQModel") | {
        k: (list(vcfg[k]) if isinstance(vcfg[k], (list, tuple)) else vcfg[k])
        for k in (
            "act_fn", "block_out_channels", "down_block_types", "in_channels", "latent_channels",
            "layers_per_block", "norm_num_groups", "num_vq_embeddings", "out_channels",
            "sample_size", "up_block_types", "vq_embed_dim",
        )
    }
    scheduler = head("VQDiffusionScheduler") | {
        k: scfg[k]
        for k in (
            "alpha_cum_end", "alpha_cum_start", "gamma_cum_end", "gamma_cum_start",
            "num_train_timesteps", "num_vec_classes",
        )
    }
    lcfg = pipe.learned_classifier_free_sampling_embeddings.config
    learned = head("LearnedClassifierFreeSamplingEmbeddings") | {
        "hidden_size": lcfg["hidden_size"],
        "learnable": bool(lcfg["learnable"]),
        "length": lcfg["length"],
    }
    c = pipe.text_encoder.config
    text = {
        "_name_or_path": "openai/clip-vit-base-patch32",
        "architectures": ["CLIPTextModel"],
        "attention_dropout": c.attention_dropout,
        # Old CLIPTextConfig defaults (bos 0, pad 1, eos 2), as the published file has: they do
        # not match the tokenizer, which is harmless because only last_hidden_state is used.
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": c.hidden_act,
        "hidden_size": c.hidden_size,
        "initializer_factor": c.initializer_factor,
        "initializer_range": c.initializer_range,
        "intermediate_size": c.intermediate_size,
        "layer_norm_eps": c.layer_norm_eps,
        "max_position_embeddings": c.max_position_embeddings,
        "model_type": "clip_text_model",
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "pad_token_id": 1,
        "projection_dim": c.projection_dim,
        "torch_dtype": "float32",
        "transformers_version": ITHQ_TRANSFORMERS_VERSION,
        "vocab_size": c.vocab_size,
    }
    model_index = head("VQDiffusionPipeline") | {
        "learned_classifier_free_sampling_embeddings": ["vq_diffusion", "LearnedClassifierFreeSamplingEmbeddings"],
        "scheduler": ["diffusers", "VQDiffusionScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "transformer": ["diffusers", "Transformer2DModel"],
        "vqvae": ["diffusers", "VQModel"],
    }
    return {
        "model_index.json": model_index,
        "transformer/config.json": transformer,
        "vqvae/config.json": vqvae,
        "scheduler/scheduler_config.json": scheduler,
        "learned_classifier_free_sampling_embeddings/config.json": learned,
        "text_encoder/config.json": text,
    }


def ithq_layout_files(
    *, learnable: bool = True, fp32_bin: bool = True, fp16_safetensors: bool = True, fp16_bin: bool = True
) -> list[str]:
    """Relative paths save_ithq_layout writes for these flags (sorted)."""
    files = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "transformer/config.json",
        "vqvae/config.json",
        "learned_classifier_free_sampling_embeddings/config.json",
    ]
    diffusers_folders = ["transformer", "vqvae"] + (["learned_classifier_free_sampling_embeddings"] if learnable else [])
    for d in diffusers_folders:
        files += [f"{d}/diffusion_pytorch_model.bin"] * fp32_bin
        files += [f"{d}/diffusion_pytorch_model.fp16.bin"] * fp16_bin
        files += [f"{d}/diffusion_pytorch_model.fp16.safetensors"] * fp16_safetensors
    files += ["text_encoder/pytorch_model.bin"] * fp32_bin
    files += ["text_encoder/pytorch_model.fp16.bin"] * fp16_bin
    files += ["text_encoder/model.fp16.safetensors"] * fp16_safetensors
    return sorted(files)


def save_ithq_layout(
    pipe, folder: Path, *, fp32_bin: bool = True, fp16_safetensors: bool = True, fp16_bin: bool = True
) -> Path:
    """Write `pipe` in the layout of the published microsoft/vq-diffusion-ithq repo (SPEC 1).

    Quirks reproduced: model_index.json names library "vq_diffusion" for the learned embeddings;
    transformer config has no "norm_type"; configs carry only the keys ITHQ's have; fp32 weights
    only as pickles (torch.save of a plain state dict), fp16 as both pickle and safetensors.

    Key names per file:
      transformer/*                 current diffusers names (unchanged since ITHQ was saved)
      vqvae/*.bin (fp32 and fp16)   OLD attention names: query/key/value/proj_attn
      vqvae/*.fp16.safetensors      NEW attention names: to_q/to_k/to_v/to_out.0
      text_encoder/*.bin            `text_model.` prefix + int64 `text_model.embeddings.position_ids`
                                    (kept int64 in the fp16 .bin as well, as .half() leaves it)
      text_encoder/model.fp16.safetensors   transformers-5 names: no prefix, no position_ids
      learned_classifier_free_sampling_embeddings/*   one key "embeddings" (77, 32)

    With a non-learnable pipe the learned-embeddings folder holds only config.json
    ("learnable": false): there is nothing to store (diffusers itself would save an empty (0,)
    tensor), and a loader must then fall back to CLIP("") as the null sequence.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for rel, cfg in _ithq_configs(pipe).items():
        _write_json(folder / rel, cfg)
    write_tiny_clip_tokenizer(folder / "tokenizer")

    learnable = bool(pipe.learned_classifier_free_sampling_embeddings.config["learnable"])
    text_sd = pipe.text_encoder.state_dict()
    # (subfolder, file stem or None for transformers' names, state dict as the .bin files name it,
    #  state dict as the safetensors file names it)
    parts = [
        (
            "transformer",
            "diffusion_pytorch_model",
            pipe.transformer.state_dict(),
            pipe.transformer.state_dict(),
        ),
        (
            "vqvae",
            "diffusion_pytorch_model",
            vqvae_keys_to_old(pipe.vqvae.state_dict()),
            vqvae_keys_to_new(pipe.vqvae.state_dict()),
        ),
        ("text_encoder", None, text_keys_to_old(text_sd), text_keys_to_new(text_sd)),
    ]
    if learnable:
        emb = pipe.learned_classifier_free_sampling_embeddings.embeddings
        sd = OrderedDict(embeddings=emb)
        parts.append(("learned_classifier_free_sampling_embeddings", "diffusion_pytorch_model", sd, sd))

    for sub, stem, bin_sd, st_sd in parts:
        d = folder / sub
        if stem is None:  # transformers naming
            fp32_name, fp16_name, st_name = "pytorch_model.bin", "pytorch_model.fp16.bin", "model.fp16.safetensors"
        else:
            fp32_name, fp16_name, st_name = f"{stem}.bin", f"{stem}.fp16.bin", f"{stem}.fp16.safetensors"
        if fp32_bin:
            torch.save(_plain(bin_sd, torch.float32), d / fp32_name)
        if fp16_bin:
            torch.save(_plain(bin_sd, torch.float16), d / fp16_name)
        if fp16_safetensors:
            save_file(dict(_plain(st_sd, torch.float16)), str(d / st_name), metadata={"format": "pt"})
    return folder


# ---------------------------------------------------------------------------------------------
# 5. Malicious pickle
# ---------------------------------------------------------------------------------------------


class _TouchOnUnpickle:
    """Unpickling this calls builtins.open(marker, "w"), which creates the marker file.

    open() is used rather than os.system so the payload needs no shell and works everywhere;
    any code execution is equally fatal, the marker only makes it observable.
    """

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def save_evil_pickle(path: Path, marker: Path) -> None:
    """A torch.save zip file that looks like a state dict but runs code when loaded with
    weights_only=False. torch.load(weights_only=True) must refuse it without creating `marker`."""
    payload = OrderedDict(embeddings=torch.zeros(TEXT_LENGTH, TEXT_WIDTH), extra=_TouchOnUnpickle(marker))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)  # default protocol 2, like real checkpoints
