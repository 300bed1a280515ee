"""Loading model folders: file choice by dtype, memory mapping, and one clear error for each way a
folder can be broken, naming the component (and the key) at fault."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny_checkpoint as tc
from vqgen.checkpoint import read_safetensors
from vqgen.cli import main
from vqgen.errors import CheckpointError
from vqgen.pipeline import Pipeline, Settings


@pytest.fixture
def folder(ithq_folder, tmp_path):
    """A private copy of the ITHQ-layout folder to break."""
    return shutil.copytree(ithq_folder, tmp_path / "model")


def cli_error(capsys, folder, tmp_path):
    code = main(["a cat", "-m", str(folder), "-o", str(tmp_path / "x.png"), "--steps", "2"])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqgen: error: "), err
    assert not (tmp_path / "x.png").exists()
    return lines[0]


def test_float32_prefers_fp32_files_and_float16_the_half_ones(ithq_folder):
    p32 = Pipeline.from_folder(ithq_folder, device="cpu", dtype="float32", exact=True)
    assert p32.c.weight_files["transformer"].endswith("diffusion_pytorch_model.bin")
    p16 = Pipeline.from_folder(ithq_folder, device="cpu", dtype="float16", exact=True)
    assert p16.c.weight_files["transformer"].endswith(".fp16.safetensors")
    assert next(p16.c.transformer.parameters()).dtype == torch.float16
    pbf = Pipeline.from_folder(ithq_folder, device="cpu", dtype="bfloat16", exact=True)
    assert next(pbf.c.vqvae.parameters()).dtype == torch.bfloat16


def test_safetensors_are_memory_mapped_not_copied(diffusers_folder):
    """float32 safetensors on the CPU: the model's weights are views of the file mapping."""
    pipe = Pipeline.from_folder(diffusers_folder, device="cpu", exact=True)
    weight = pipe.c.transformer.head.weight
    state = read_safetensors(diffusers_folder / "transformer" / "diffusion_pytorch_model.safetensors", "t")
    assert torch.equal(weight, state["out.weight"])
    assert weight.untyped_storage().nbytes() == weight.numel() * 4  # a view of its own bytes, not a copy of a dict


def test_reader_equals_safetensors_library(diffusers_folder):
    path = diffusers_folder / "vqvae" / "diffusion_pytorch_model.safetensors"
    ours, theirs = read_safetensors(path, "vqvae"), load_file(path)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_truncated_safetensors(capsys, diffusers_folder, tmp_path):
    folder = shutil.copytree(diffusers_folder, tmp_path / "m")
    path = folder / "vqvae" / "diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    line = cli_error(capsys, folder, tmp_path)
    assert "vqvae" in line and "truncated or corrupted" in line


def test_garbage_safetensors_header(capsys, diffusers_folder, tmp_path):
    folder = shutil.copytree(diffusers_folder, tmp_path / "m")
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"\xff" * 100)
    assert "transformer" in cli_error(capsys, folder, tmp_path)


def test_truncated_pickle(capsys, folder, tmp_path):
    path = folder / "text_encoder" / "pytorch_model.bin"
    path.write_bytes(path.read_bytes()[:1000])
    line = cli_error(capsys, folder, tmp_path)
    assert "text_encoder" in line and "truncated or corrupted" in line


def test_pickle_that_would_run_code_is_refused(capsys, folder, tmp_path):
    marker = tmp_path / "pwned"
    tc.save_evil_pickle(folder / "learned_classifier_free_sampling_embeddings" / "diffusion_pytorch_model.bin", marker)
    line = cli_error(capsys, folder, tmp_path)
    assert "refused" in line and "learned_classifier_free_sampling_embeddings" in line
    assert not marker.exists()


def test_missing_extra_and_misshaped_keys(folder):
    path = folder / "transformer" / "diffusion_pytorch_model.bin"
    state = torch.load(path, weights_only=True)

    def broken(change):
        s = dict(state)
        change(s)
        torch.save(s, path)
        with pytest.raises(CheckpointError) as e:
            Pipeline.from_folder(folder, device="cpu", exact=True)
        return str(e.value)

    msg = broken(lambda s: s.pop("transformer_blocks.1.attn2.to_k.weight"))
    assert "transformer" in msg and "blocks.1.attn2.k.weight" in msg and "lacks" in msg
    msg = broken(lambda s: s.update({"surprise.weight": torch.zeros(3)}))
    assert "unexpected" in msg and "surprise.weight" in msg
    msg = broken(lambda s: s.update({"out.weight": torch.zeros(5, 5)}))
    assert "shape" in msg and "head.weight" in msg


def test_not_a_vq_diffusion_pipeline(capsys, folder, tmp_path):
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    assert "StableDiffusionPipeline" in cli_error(capsys, folder, tmp_path)


def test_missing_component_config(capsys, folder, tmp_path):
    (folder / "vqvae" / "config.json").unlink()
    line = cli_error(capsys, folder, tmp_path)
    assert "vqvae" in line and "config.json" in line


def test_missing_weights(capsys, folder, tmp_path):
    for f in (folder / "vqvae").glob("diffusion_pytorch_model*"):
        f.unlink()
    line = cli_error(capsys, folder, tmp_path)
    assert "vqvae" in line and "no weight file" in line


def test_unsupported_architecture(folder):
    cfg_path = folder / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["activation_fn"] = "gelu"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="activation_fn"):
        Pipeline.from_folder(folder, device="cpu", exact=True)


def test_safetensors_with_old_vae_names_also_load(diffusers_folder, tmp_path):
    """Key naming is independent of the file format: old VAE names inside safetensors load too."""
    folder = shutil.copytree(diffusers_folder, tmp_path / "m")
    path = folder / "vqvae" / "diffusion_pytorch_model.safetensors"
    save_file(dict(tc.vqvae_keys_to_old(load_file(path))), path)
    Pipeline.from_folder(folder, device="cpu", exact=True)


def _edit_config(folder, sub, **changes):
    path = folder / sub / "config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))


def test_legacy_layer_norm_spelling_is_ada_norm(diffusers_folder, tmp_path):
    """diffusers writes "norm_type": "layer_norm" for a Transformer2DModel built without norm_type
    and reads it, next to num_embeds_ada_norm, as ada_norm: so does vqgen (same tokens)."""
    folder = shutil.copytree(diffusers_folder, tmp_path / "m")
    _edit_config(folder, "transformer", norm_type="layer_norm")
    settings = Settings(steps=3)
    legacy = Pipeline.from_folder(folder, device="cpu").generate_tokens(["a red bus"], [5], settings)[0]
    modern = Pipeline.from_folder(diffusers_folder, device="cpu").generate_tokens(["a red bus"], [5], settings)[0]
    assert torch.equal(legacy, modern)


@pytest.mark.parametrize("changes,needle", [
    (dict(norm_type="layer_norm", num_embeds_ada_norm=None), "norm_type='layer_norm'"),  # plain LayerNorm blocks
    (dict(norm_type="ada_norm_zero"), "norm_type='ada_norm_zero'"),
    (dict(norm_type="ada_norm", num_embeds_ada_norm=None), "num_embeds_ada_norm=None"),
])
def test_other_norm_types_are_refused(capsys, folder, tmp_path, changes, needle):
    _edit_config(folder, "transformer", **changes)
    line = cli_error(capsys, folder, tmp_path)
    assert "transformer" in line and needle in line


def _resize_codebook(folder, num_codes):
    """Give the VQ-VAE a codebook of num_codes rows (extra rows random, or rows cut off)."""
    _edit_config(folder, "vqvae", num_vq_embeddings=num_codes)
    for path in (folder / "vqvae").glob("*.safetensors"):
        state = load_file(path)
        book = state["quantize.embedding.weight"]
        extra = torch.randn((max(num_codes - len(book), 0), book.shape[1]), generator=torch.Generator().manual_seed(0))
        state["quantize.embedding.weight"] = torch.cat([book, extra.to(book.dtype)])[:num_codes].contiguous()
        save_file(state, path)


def test_codebook_larger_than_the_classes_loads(diffusers_folder, tmp_path):
    """Codes the transformer never predicts are never decoded: the same images as without them."""
    folder = shutil.copytree(diffusers_folder, tmp_path / "m")
    _resize_codebook(folder, tc.NUM_CODES + 3)
    settings = Settings(steps=3)
    bigger = Pipeline.from_folder(folder, device="cpu")
    assert bigger.c.vqvae.cfg.num_codes == tc.NUM_CODES + 3
    same = Pipeline.from_folder(diffusers_folder, device="cpu")
    a, b = (p.generate(["a red bus"], [5], settings).images[0] for p in (bigger, same))
    assert a.tobytes() == b.tobytes()


def test_codebook_smaller_than_the_classes_is_refused(capsys, diffusers_folder, tmp_path):
    folder = shutil.copytree(diffusers_folder, tmp_path / "m")
    _resize_codebook(folder, tc.NUM_CODES - 1)
    line = cli_error(capsys, folder, tmp_path)
    assert f"vqvae has {tc.NUM_CODES - 1} codes but the transformer predicts {tc.NUM_CODES}" in line
