"""Shared fixtures: tiny random VQ-Diffusion checkpoints, built once per session with diffusers (the
oracle) and saved in both layouts vqgen must read."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import diffusers_dummy as dd  # noqa: E402
import tiny_checkpoint as tc  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ref_pipe():
    """The diffusers reference pipeline with a learned null embedding."""
    return tc.build_tiny_pipeline(0, learnable=True)


@pytest.fixture(scope="session")
def ref_pipe_no_null():
    """A reference pipeline without learned null: guidance uses CLIP("")."""
    return tc.build_tiny_pipeline(1, learnable=False)


@pytest.fixture(scope="session")
def diffusers_folder(ref_pipe, tmp_path_factory):
    return tc.save_diffusers_layout(ref_pipe, tmp_path_factory.mktemp("diffusers-layout"))


@pytest.fixture(scope="session")
def ithq_folder(ref_pipe, tmp_path_factory):
    return tc.save_ithq_layout(ref_pipe, tmp_path_factory.mktemp("ithq-layout"))


@pytest.fixture(scope="session")
def no_null_folder(ref_pipe_no_null, tmp_path_factory):
    return tc.save_ithq_layout(ref_pipe_no_null, tmp_path_factory.mktemp("ithq-no-null"))


@pytest.fixture(scope="session")
def dummy_pipes():
    """diffusers' own VQ-Diffusion test components (diffusers_dummy.py): with a learned null of
    zeros ("learnable") and without ("plain"), as its two fast tests use them."""
    return {"learnable": dd.build_dummy_pipeline(True), "plain": dd.build_dummy_pipeline(False)}


@pytest.fixture(scope="session")
def dummy_folders(dummy_pipes, tmp_path_factory):
    return {name: dd.save_dummy_pipeline(pipe, tmp_path_factory.mktemp(f"dummy-{name}")) for name, pipe in dummy_pipes.items()}


_reference_cache: dict = {}


def reference_run(pipe, prompt: str, seed: int, guidance: float = 5.0, truncation: float = 1.0, steps: int = 100):
    """(tokens (N,), uint8 image (H, W, 3)) from diffusers' pipeline for one image (memoised: several
    tests compare against the same reference run)."""
    key = (id(pipe), prompt, seed, guidance, truncation, steps)
    if key in _reference_cache:
        return _reference_cache[key]
    seen = {}

    def grab(i, t, sample):
        seen["tokens"] = sample.clone()

    out = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, truncation_rate=truncation,
               generator=torch.Generator().manual_seed(seed), output_type="np", callback=grab, callback_steps=1)
    image = (out.images[0] * 255).round().astype(np.uint8)
    _reference_cache[key] = seen["tokens"][0], image
    return _reference_cache[key]


@pytest.fixture(scope="session")
def reference():
    return reference_run
