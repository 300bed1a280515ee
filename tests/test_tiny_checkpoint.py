"""Sanity checks of the tiny test checkpoints (tests/tiny_checkpoint.py) against diffusers/transformers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

try:
    from . import tiny_checkpoint as tc
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import tiny_checkpoint as tc

PROMPTS = [
    "a red bus",
    "the circle in the top left",
    "A  Photo\tof a CAT!!",  # case, odd whitespace, pad token "!" inside the text
    "ein Bär über der Straße, 東京 🚌",  # non-ASCII: byte-level fallback
    "café CAFÉ cafe\u0301",  # NFC normalisation
    "dog's 123 4.5",
    "",
    " ".join(["a red bus in the top left corner"] * 12),  # far over 77 tokens
]

# SPEC section 1 table, verbatim.
SPEC_ITHQ_FILES = {
    "model_index.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.bin",
    "transformer/diffusion_pytorch_model.fp16.bin",
    "transformer/diffusion_pytorch_model.fp16.safetensors",
    "vqvae/config.json",
    "vqvae/diffusion_pytorch_model.bin",
    "vqvae/diffusion_pytorch_model.fp16.bin",
    "vqvae/diffusion_pytorch_model.fp16.safetensors",
    "text_encoder/config.json",
    "text_encoder/pytorch_model.bin",
    "text_encoder/pytorch_model.fp16.bin",
    "text_encoder/model.fp16.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "learned_classifier_free_sampling_embeddings/config.json",
    "learned_classifier_free_sampling_embeddings/diffusion_pytorch_model.bin",
    "learned_classifier_free_sampling_embeddings/diffusion_pytorch_model.fp16.bin",
    "learned_classifier_free_sampling_embeddings/diffusion_pytorch_model.fp16.safetensors",
    "scheduler/scheduler_config.json",
}


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def pipe():
    return tc.build_tiny_pipeline(seed=0, learnable=True)


@pytest.fixture(scope="module")
def pipe_plain():
    return tc.build_tiny_pipeline(seed=0, learnable=False)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    tc.write_tiny_clip_tokenizer(d)
    return d


# -- tokenizer ----------------------------------------------------------------------------------


def test_vocab_is_built_like_clips():
    vocab = tc.tiny_vocab()
    by_id = {i: t for t, i in vocab.items()}
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert by_id[0] == "!" and by_id[255 + 1] == "!</w>"
    assert [by_id[i] + "</w>" for i in range(256)] == [by_id[256 + i] for i in range(256)]
    assert by_id[len(vocab) - 2] == "<|startoftext|>" and by_id[len(vocab) - 1] == "<|endoftext|>"
    for a, b in tc.tiny_merges():  # every merge joins two tokens into a token
        assert a in vocab and b in vocab and a + b in vocab


def test_tokenizer_files_and_ids(tok_dir):
    from transformers import AutoTokenizer, CLIPTokenizer, CLIPTokenizerFast

    assert _files(tok_dir) == {"vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"}
    toks = [CLIPTokenizer.from_pretrained(tok_dir), AutoTokenizer.from_pretrained(tok_dir),
            CLIPTokenizerFast.from_pretrained(tok_dir)]
    for tok in toks:
        assert (tok.pad_token, tok.pad_token_id) == ("!", 0)
        assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (tc.BOS_ID, tc.EOS_ID, tc.EOS_ID)
        assert tok.model_max_length == 77
    for prompt in PROMPTS:
        ref = tc.reference_clip_tokenize(prompt)
        for tok in toks:
            assert tok(prompt).input_ids == ref, prompt
    assert tc.reference_clip_tokenize("A  Photo\tof a CAT!!")[-3:] == [0, 0, tc.EOS_ID]


def test_tokenizer_padding_and_overlong(tok_dir):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tok_dir)
    ids = tok("a red bus", padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids.shape == (1, 77) and ids[0, :5].tolist() == [tc.BOS_ID, *tc.reference_clip_tokenize("a red bus")[1:]]
    assert (ids[0, 5:] == 0).all()
    # The reference pads without truncation: an over-long prompt stays longer than 77 (SPEC 2).
    long_ids = tok(PROMPTS[-1], padding="max_length", max_length=77).input_ids
    assert len(long_ids) > 77 and long_ids[-1] == tc.EOS_ID


def test_training_words_are_single_tokens():
    for line in tc.TOKENIZER_WORDS:
        for w in line.split():
            assert len(tc.reference_clip_tokenize(w)) == 3, w


# -- pipeline -----------------------------------------------------------------------------------


def test_build_is_deterministic(pipe):
    again = tc.build_tiny_pipeline(seed=0, learnable=True)
    other = tc.build_tiny_pipeline(seed=1, learnable=True)
    for name in ("vqvae", "transformer", "text_encoder", "learned_classifier_free_sampling_embeddings"):
        _assert_same_state(getattr(pipe, name).state_dict(), getattr(again, name).state_dict())
        a, b = getattr(pipe, name).state_dict(), getattr(other, name).state_dict()
        assert not all(torch.equal(a[k], b[k]) for k in a), name
    for name in ("vqvae", "transformer", "text_encoder", "learned_classifier_free_sampling_embeddings"):
        for p in getattr(pipe, name).parameters():
            assert p.dtype == torch.float32
            assert p.numel() < 2 or p.std() > 0.01  # nothing left at a constant init


def test_text_encoder_semantics(pipe):
    # What SPEC 2 relies on in transformers 5: causal attention (later tokens, e.g. padding, do
    # not change earlier positions) and last_hidden_state taken after the final layer norm.
    te = pipe.text_encoder
    ids = pipe.tokenizer("a red bus", padding="max_length", max_length=77, return_tensors="pt").input_ids
    other = ids.clone()
    other[0, 10:] = 7
    with torch.no_grad():
        out = te(ids, output_hidden_states=True)
        assert torch.equal(out.last_hidden_state[:, :10], te(other).last_hidden_state[:, :10])
        assert not torch.allclose(out.last_hidden_state[:, 10:], te(other).last_hidden_state[:, 10:])
        assert torch.allclose(out.last_hidden_state, te.final_layer_norm(out.hidden_states[-1]), atol=1e-6)
    assert out.last_hidden_state.shape == (1, 77, tc.TEXT_WIDTH)


def test_vqvae_shapes(pipe):
    with torch.no_grad():
        image = torch.rand(1, 3, tc.IMAGE_SIDE, tc.IMAGE_SIDE) * 2 - 1
        latents = pipe.vqvae.encode(image).latents
        assert latents.shape == (1, 8, tc.LATENT_SIDE, tc.LATENT_SIDE)  # vq_embed_dim 8
        assert pipe.vqvae.quantize.embedding.weight.shape == (tc.NUM_CODES, 8)
        assert pipe.vqvae.decode(latents).sample.shape == image.shape


def test_transformer_output_is_informative(pipe):
    tokens = torch.randint(0, tc.NUM_CLASSES, (2, tc.LATENT_SIDE**2), generator=torch.Generator().manual_seed(0))
    tokens[1, ::3] = tc.NUM_CLASSES - 1

    def encode(prompt):
        ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
        e = pipe.text_encoder(ids).last_hidden_state
        return (e / e.norm(dim=-1, keepdim=True)).expand(2, -1, -1)

    def logp(text, t):
        return pipe.transformer(tokens, encoder_hidden_states=text, timestep=torch.tensor(t)).sample

    with torch.no_grad():
        bus, circle = encode("a red bus"), encode("the green circle")
        null = pipe.learned_classifier_free_sampling_embeddings.embeddings.expand(2, -1, -1)
        out = logp(bus, 50)
        assert out.shape == (2, tc.NUM_CLASSES - 1, tc.LATENT_SIDE**2)
        assert torch.allclose(out.exp().sum(1), torch.ones(2, 64), atol=1e-5)
        top = out.exp().max(1).values
        assert top.min() > 1.5 / 64 and top.max() > 0.15 and top.std() > 0.01  # peaked, and varied
        assert out.argmax(1).unique().numel() > 10
        assert (out - logp(bus, 0)).abs().max() > 0.5  # timestep matters
        assert (out - logp(circle, 50)).abs().max() > 0.2  # prompt matters
        assert (out - logp(null, 50)).abs().max() > 0.2  # learned null matters


@pytest.mark.parametrize("learnable", [True, False])
@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_pipeline_runs(pipe, pipe_plain, learnable, guidance):
    p = pipe if learnable else pipe_plain
    out = p("a red bus", num_inference_steps=100, guidance_scale=guidance,
            generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, tc.IMAGE_SIDE, tc.IMAGE_SIDE, 3)
    assert 0.1 < out.std() and ((out > 0) & (out < 1)).mean() > 0.9


# -- layouts ------------------------------------------------------------------------------------


def test_diffusers_layout_roundtrip(pipe, tmp_path):
    folder = tc.save_diffusers_layout(pipe, tmp_path / "d")
    assert _files(folder) == {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
        "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
        "vqvae/config.json", "vqvae/diffusion_pytorch_model.safetensors",
        "learned_classifier_free_sampling_embeddings/config.json",
        "learned_classifier_free_sampling_embeddings/diffusion_pytorch_model.safetensors",
    }
    back = tc.load_diffusers_layout(folder)
    for name in ("vqvae", "transformer", "text_encoder", "learned_classifier_free_sampling_embeddings"):
        _assert_same_state(getattr(pipe, name).state_dict(), getattr(back, name).state_dict())
    for prompt in PROMPTS:
        assert back.tokenizer(prompt).input_ids == pipe.tokenizer(prompt).input_ids


def test_ithq_layout_files(pipe, pipe_plain, tmp_path):
    assert _files(tc.save_ithq_layout(pipe, tmp_path / "full")) == SPEC_ITHQ_FILES
    assert sorted(SPEC_ITHQ_FILES) == tc.ithq_layout_files()
    plain = _files(tc.save_ithq_layout(pipe_plain, tmp_path / "plain"))
    assert plain == {f for f in SPEC_ITHQ_FILES if not f.startswith("learned_") or f.endswith("config.json")}
    fp16 = _files(tc.save_ithq_layout(pipe, tmp_path / "fp16", fp32_bin=False, fp16_bin=False))
    assert fp16 == set(tc.ithq_layout_files(fp32_bin=False, fp16_bin=False))
    assert not any(f.endswith(".bin") for f in fp16)
    only32 = _files(tc.save_ithq_layout(pipe, tmp_path / "fp32", fp16_safetensors=False, fp16_bin=False))
    assert not any("fp16" in f for f in only32) and "vqvae/diffusion_pytorch_model.bin" in only32


def test_ithq_configs(pipe, tmp_path):
    folder = tc.save_ithq_layout(pipe, tmp_path / "ithq")
    read = lambda rel: json.loads((folder / rel).read_text())  # noqa: E731
    index = read("model_index.json")
    assert index["learned_classifier_free_sampling_embeddings"] == ["vq_diffusion", "LearnedClassifierFreeSamplingEmbeddings"]
    assert index["_diffusers_version"].startswith("0.11")
    tcfg = read("transformer/config.json")
    assert "norm_type" not in tcfg and tcfg["num_vector_embeds"] == 65 and tcfg["num_embeds_ada_norm"] == 100
    assert read("learned_classifier_free_sampling_embeddings/config.json") == {
        "_class_name": "LearnedClassifierFreeSamplingEmbeddings", "_diffusers_version": tc.ITHQ_DIFFUSERS_VERSION,
        "hidden_size": 32, "learnable": True, "length": 77}
    assert read("scheduler/scheduler_config.json")["num_vec_classes"] == 65
    assert read("vqvae/config.json")["num_vq_embeddings"] == 64
    assert read("text_encoder/config.json")["vocab_size"] == tc.VOCAB_SIZE


def test_ithq_weights_roundtrip(pipe, tmp_path):
    from safetensors.torch import load_file

    folder = tc.save_ithq_layout(pipe, tmp_path / "ithq")
    half = lambda sd: {k: v.half() for k, v in sd.items()}  # noqa: E731

    def check(sub, stem, ref, from_bin, from_st=lambda sd: sd):
        sd32 = torch.load(folder / sub / f"{stem[0]}", weights_only=True)
        sd16 = torch.load(folder / sub / f"{stem[1]}", weights_only=True)
        st16 = load_file(str(folder / sub / f"{stem[2]}"))
        _assert_same_state(from_bin(sd32), ref)
        _assert_same_state(from_bin(sd16), half(ref))
        _assert_same_state(from_st(st16), half(ref))
        return sd32, sd16, st16

    diff_names = ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin",
                  "diffusion_pytorch_model.fp16.safetensors")
    check("transformer", diff_names, pipe.transformer.state_dict(), lambda sd: sd)
    check("learned_classifier_free_sampling_embeddings", diff_names,
          {"embeddings": pipe.learned_classifier_free_sampling_embeddings.embeddings.detach()}, lambda sd: sd)

    v32, v16, vst = check("vqvae", diff_names, pipe.vqvae.state_dict(), tc.vqvae_keys_to_new)
    for sd in (v32, v16):
        assert "decoder.mid_block.attentions.0.query.weight" in sd
        assert "decoder.mid_block.attentions.0.group_norm.weight" in sd
        assert not any(".to_q." in k or ".to_out." in k for k in sd)
    assert "decoder.mid_block.attentions.0.to_out.0.weight" in vst and not any(".query." in k for k in vst)
    assert vst["decoder.mid_block.attentions.0.to_q.weight"].shape == (64, 64)

    text_names = ("pytorch_model.bin", "pytorch_model.fp16.bin", "model.fp16.safetensors")
    t32, t16, tst = check("text_encoder", text_names, pipe.text_encoder.state_dict(), tc.text_keys_to_new)
    for sd in (t32, t16):
        assert all(k.startswith("text_model.") for k in sd)
        pos = sd["text_model.embeddings.position_ids"]
        assert pos.dtype == torch.int64 and pos.tolist() == [list(range(77))]
    assert not any(k.startswith("text_model.") or "position_ids" in k for k in tst)


def test_ithq_layout_is_not_loadable_by_current_diffusers(pipe, tmp_path):
    # The quirk the layout must keep (SPEC 1): without "norm_type" current diffusers gives up.
    from diffusers import Transformer2DModel

    folder = tc.save_ithq_layout(pipe, tmp_path / "ithq")
    with pytest.raises(KeyError, match="norm_type"):
        Transformer2DModel.from_pretrained(folder, subfolder="transformer")


# -- malicious pickle ---------------------------------------------------------------------------


def test_evil_pickle(tmp_path):
    path, marker = tmp_path / "diffusion_pytorch_model.bin", tmp_path / "PWNED"
    tc.save_evil_pickle(path, marker)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported global"):
        torch.load(path, weights_only=True)
    assert not marker.exists()
    # Prove the payload is live, so "marker absent" above means something.
    loaded = torch.load(path, weights_only=False)
    loaded["extra"].close()
    assert marker.exists()
    os.remove(marker)
