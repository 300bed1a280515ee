"""The acceptance test that matters most: with the whole chain on CPU float32, vqgen makes the same
tokens and the same pixels as diffusers' VQDiffusionPipeline for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqgen.pipeline import Pipeline, Settings

LONG_PROMPT = " ".join(["a big red bus on the street under a blue sky with a little white cat"] * 8)  # > 77 tokens
PROMPTS = ["a red bus", LONG_PROMPT, "ein Bär über der Straße, 東京 🚌"]
SETTINGS = [(5.0, 1.0), (1.0, 0.86), (3.0, 0.9)]


@pytest.fixture(scope="module")
def pipes(diffusers_folder, ithq_folder):
    return {
        "diffusers": Pipeline.from_folder(diffusers_folder, device="cpu", exact=True),
        "ithq": Pipeline.from_folder(ithq_folder, device="cpu", exact=True),
    }


def run_vqgen(pipe, prompt, seeds, guidance, truncation):
    settings = Settings(guidance=guidance, truncation=truncation)
    tokens, _, _ = pipe.generate_tokens([prompt] * len(seeds), seeds, settings)
    images = [np.asarray(im) for im in pipe.decode(tokens)]
    return tokens, images


@pytest.mark.parametrize("layout", ["diffusers", "ithq"])
@pytest.mark.parametrize("prompt", PROMPTS, ids=["short", "long", "non-ascii"])
@pytest.mark.parametrize("guidance,truncation", SETTINGS)
def test_tokens_and_pixels_equal_reference(pipes, ref_pipe, reference, layout, prompt, guidance, truncation):
    seed = 1234
    ref_tokens, ref_image = reference(ref_pipe, prompt, seed, guidance, truncation)
    tokens, images = run_vqgen(pipes[layout], prompt, [seed], guidance, truncation)
    assert torch.equal(tokens[0], ref_tokens)
    assert np.array_equal(images[0], ref_image)


def test_images_are_not_trivial(pipes, ref_pipe, reference):
    """Parity would be meaningless if every seed gave the same flat image."""
    _, a = reference(ref_pipe, "a red bus", 1)
    _, b = reference(ref_pipe, "a red bus", 2)
    assert not np.array_equal(a, b)
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 20


def test_num_images_uses_consecutive_seeds(pipes, ref_pipe, reference):
    """Image i of -n N with seed S equals the reference's single image for seed S+i."""
    tokens, images = run_vqgen(pipes["ithq"], "a blue boat", [40, 41, 42], 5.0, 1.0)
    for i, seed in enumerate([40, 41, 42]):
        ref_tokens, ref_image = reference(ref_pipe, "a blue boat", seed)
        assert torch.equal(tokens[i], ref_tokens)
        assert np.array_equal(images[i], ref_image)


def test_pipeline_call_api(pipes, ref_pipe, reference):
    result = pipes["diffusers"]("a green tree", seed=7, num_images=2, guidance=5.0)
    assert result.seeds == [7, 8]
    for seed, image in zip(result.seeds, result.images):
        assert np.array_equal(np.asarray(image), reference(ref_pipe, "a green tree", seed)[1])


@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_model_without_learned_null_uses_clip_empty_prompt(ref_pipe_no_null, no_null_folder, reference, guidance):
    pipe = Pipeline.from_folder(no_null_folder, device="cpu", exact=True)
    assert pipe.c.text_encoder.learned_null is None
    ref_tokens, ref_image = reference(ref_pipe_no_null, "a cat in the house", 5, guidance)
    tokens, images = run_vqgen(pipe, "a cat in the house", [5], guidance, 1.0)
    assert torch.equal(tokens[0], ref_tokens)
    assert np.array_equal(images[0], ref_image)


def test_fp16_only_folder_is_upcast_and_matches_a_rounded_reference(ref_pipe, reference, tmp_path):
    """With only half-precision files, float32 runs on upcast weights: exactly the reference whose
    weights were rounded to float16."""
    import copy

    import tiny_checkpoint as tc

    folder = tc.save_ithq_layout(ref_pipe, tmp_path / "fp16", fp32_bin=False, fp16_bin=False)
    pipe = Pipeline.from_folder(folder, device="cpu", exact=True)
    assert all(f.endswith(".fp16.safetensors") for f in pipe.c.weight_files.values())
    assert next(pipe.c.transformer.parameters()).dtype == torch.float32
    rounded = copy.deepcopy(ref_pipe)
    for module in (rounded.transformer, rounded.vqvae, rounded.text_encoder, rounded.learned_classifier_free_sampling_embeddings):
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(p.half().float())
    ref_tokens, ref_image = reference(rounded, "a red bus", 11)
    tokens, images = run_vqgen(pipe, "a red bus", [11], 5.0, 1.0)
    assert torch.equal(tokens[0], ref_tokens)
    assert np.array_equal(images[0], ref_image)
