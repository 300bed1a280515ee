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


# diffusers' own test components (tests/diffusers_dummy.py): legacy "layer_norm" spelling, a
# spare VQ code, and a transformer that knows 12 of the scheduler's 100 timesteps.
# (steps, guidance, truncation): the first is its fast tests' own setting.
DUMMY_SETTINGS = [(2, 5.0, 1.0), (1, 5.0, 1.0), (12, 5.0, 1.0), (2, 1.0, 1.0), (5, 5.0, 0.9), (12, 1.0, 0.9)]


@pytest.fixture(scope="module")
def dummy_vqgen(dummy_folders):
    return {name: Pipeline.from_folder(folder, device="cpu", exact=True) for name, folder in dummy_folders.items()}


@pytest.mark.parametrize("null", ["learnable", "plain"])
@pytest.mark.parametrize("steps,guidance,truncation", DUMMY_SETTINGS)
def test_diffusers_test_components_equal_reference(dummy_pipes, dummy_vqgen, reference, null, steps, guidance, truncation):
    import diffusers_dummy as dd

    ref_tokens, ref_image = reference(dummy_pipes[null], dd.PROMPT, 0, guidance, truncation, steps)
    settings = Settings(steps=steps, guidance=guidance, truncation=truncation, schedule="diffusers")
    tokens, timesteps, _ = dummy_vqgen[null].generate_tokens([dd.PROMPT], [0], settings)
    assert timesteps == list(range(steps - 1, -1, -1))
    assert torch.equal(tokens[0], ref_tokens)
    assert np.array_equal(np.asarray(dummy_vqgen[null].decode(tokens)[0]), ref_image)


@pytest.mark.parametrize("null", ["learnable", "plain"])
def test_diffusers_test_components_default_is_the_whole_usable_chain(dummy_pipes, dummy_vqgen, reference, null):
    """With 12 timestep rows in the transformer the usable chain is timesteps 11..0 of the
    100-step tables; the default (steps=None, strided) runs all of it, which is diffusers'
    num_inference_steps=12, the most diffusers itself can run on these components."""
    import diffusers_dummy as dd

    pipe = dummy_vqgen[null]
    assert (pipe.chain.length, pipe.chain.train_timesteps, pipe.num_timesteps) == (12, 100, 12)
    result = pipe(dd.PROMPT, seed=0)
    assert result.timesteps == list(range(11, -1, -1))
    assert result.settings.steps is None
    assert np.array_equal(np.asarray(result.images[0]), reference(dummy_pipes[null], dd.PROMPT, 0, 5.0, 1.0, 12)[1])
    assert result.images[0].size == (24, 24)


def test_diffusers_test_components_strided_spreads_over_the_usable_chain(dummy_vqgen):
    import diffusers_dummy as dd

    pipe = dummy_vqgen["learnable"]
    assert pipe(dd.PROMPT, seed=0, steps=4).timesteps == [11, 7, 4, 0]
    assert pipe(dd.PROMPT, seed=0, steps=1).timesteps == [11]


def test_diffusers_test_components_images_are_not_trivial(dummy_vqgen):
    import diffusers_dummy as dd

    tokens = [dummy_vqgen["plain"].generate_tokens([dd.PROMPT], [seed], Settings(steps=2))[0][0] for seed in (0, 1)]
    assert not torch.equal(tokens[0], tokens[1])
    assert len(torch.unique(tokens[0])) > 3
    assert int(tokens[0].max()) <= 10  # 11 predicted codes; VQ code 11 is never drawn


@pytest.mark.parametrize("steps", [13, 100])
def test_diffusers_test_components_refuse_steps_beyond_the_usable_chain(dummy_vqgen, steps):
    import diffusers_dummy as dd

    from vqgen.errors import UsageError

    for schedule in ("strided", "diffusers"):
        with pytest.raises(UsageError, match=r"transformer knows only timesteps 0\.\.11 of its scheduler's 100.*use 1\.\.12$"):
            dummy_vqgen["plain"].generate_tokens([dd.PROMPT], [0], Settings(steps=steps, schedule=schedule))
