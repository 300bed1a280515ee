"""Session fixtures for the Hub tests: the tiny checkpoint in the exact ITHQ layout, served by a
local fake Hub (tests/fake_hub.py) under a few repo ids."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny_checkpoint as tc  # noqa: E402
from fake_hub import FakeHub  # noqa: E402

REPO = "microsoft/vq-diffusion-ithq"  # the real name, served locally
NOT_PIPELINE = "someone/clip-only"
BIG = "tiny/ithq-big-vqvae"  # the same model with one weight file padded past huggingface_hub's 10 MiB read chunk
BIG_FILE = "vqvae/diffusion_pytorch_model.fp16.safetensors"


def pad_safetensors(data: bytes, pad: int) -> bytes:
    """The same tensors with `pad` spaces after the JSON header (the format allows header padding):
    a file big enough that a drop after the first 10 MiB chunk shows a byte-level resume."""
    n = int.from_bytes(data[:8], "little")
    header = data[8:8 + n] + b" " * pad
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


@pytest.fixture(scope="session")
def ithq_layout(tmp_path_factory):
    """The tiny model saved exactly as the published repo is laid out (pickles, fp16 variants, quirks)."""
    return tc.save_ithq_layout(tc.build_tiny_pipeline(0), tmp_path_factory.mktemp("hub-ithq"))


@pytest.fixture(scope="session")
def hub(ithq_layout):
    server = FakeHub()
    commits = {"main": server.add_folder(REPO, ithq_layout)}
    # A second commit on a tag: same files plus a README, so pinned revisions are distinguishable.
    files = {p.relative_to(ithq_layout).as_posix(): p.read_bytes() for p in ithq_layout.rglob("*") if p.is_file()}
    commits["v1"] = server.add_files(REPO, {**files, "README.md": b"# tiny\n"}, revision="v1")
    server.repos[REPO].refs["main"] = commits["main"]
    # A repo that is a diffusers repo but not a VQ-Diffusion pipeline.
    server.add_files(NOT_PIPELINE, {"model_index.json": json.dumps({"_class_name": "StableDiffusionPipeline"}).encode(),
                                    "unet/config.json": b"{}"})
    server.add_files(BIG, {**files, BIG_FILE: pad_safetensors(files[BIG_FILE], 12 << 20)})
    server.commits = commits
    server.start()
    yield server
    server.stop()
