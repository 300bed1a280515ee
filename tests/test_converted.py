"""The converted-weights cache (vqgen/converted.py): written once, read back at the next load, the
same images either way, and never a stale, broken or unwritable file in the way."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from vqgen import converted, kernels
from vqgen.pipeline import Pipeline, Settings

SETTINGS = Settings(steps=4, schedule="strided", guidance=3.0, truncation=0.9)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """vqgen's own folder in tmp_path, and the tiny test model counted as large enough to cache."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", converted.ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(converted, "MIN_PARAMETERS", 0)
    return tmp_path / "hf" / "vqgen" / "converted"


@pytest.fixture
def model(diffusers_folder, tmp_path):
    """A private copy of the tiny model: tests change its files."""
    return shutil.copytree(diffusers_folder, tmp_path / "model")


def tokens(pipe: Pipeline) -> torch.Tensor:
    out, _, _ = pipe.generate_tokens(["a red bus", "a cat"], [3, 4], SETTINGS)
    return out


def entries(home):
    return sorted(home.glob("*.safetensors")) if home.is_dir() else []


MODES = [dict(quantize="int8")] + ([dict(dtype="bfloat16")] if kernels.cpu_features()["onednn_bf16"] else [])


@pytest.mark.parametrize("mode", MODES)
def test_written_once_then_read_and_the_images_do_not_change(home, model, mode):
    first = Pipeline.from_folder(model, device="cpu", **mode)
    assert first.c.converted.action == "written" and entries(home) == [first.c.converted.path]
    again = Pipeline.from_folder(model, device="cpu", **mode)
    assert again.c.converted.action == "read" and again.c.converted.path == first.c.converted.path
    fresh = Pipeline.from_folder(model, device="cpu", cache_converted=False, **mode)
    assert fresh.c.converted.action == "converted"
    assert torch.equal(tokens(first), tokens(again)) and torch.equal(tokens(again), tokens(fresh))
    # A valid safetensors file (the library's own reader agrees) that says what it was made from.
    from safetensors import safe_open

    with safe_open(str(first.c.converted.path), "pt") as f:
        meta = f.metadata()
        names = set(f.keys())
    assert meta["source"] == os.path.realpath(first.c.weight_files["transformer"]) and meta["mode"] == first.plan.mode
    layers = len(first.c.transformer.blocks)
    stored = "codes" if mode.get("quantize") else "weight"
    assert {f"blocks.{layers - 1}.ff.up.{stored}", "blocks.0.norm1.table"} <= names
    assert len(names) == layers * len([n for n in names if n.startswith("blocks.0.")])


def test_a_changed_model_file_is_converted_again_and_the_old_entry_goes(home, model):
    old = Pipeline.from_folder(model, device="cpu", quantize="int8").c.converted.path
    weights = next((model / "transformer").glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    new = Pipeline.from_folder(model, device="cpu", quantize="int8").c.converted
    assert new.action == "written" and new.path != old and entries(home) == [new.path]


def test_a_broken_or_foreign_entry_is_replaced_not_used(home, model):
    pipe = Pipeline.from_folder(model, device="cpu", quantize="int8")
    path, expected = pipe.c.converted.path, tokens(pipe)
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    again = Pipeline.from_folder(model, device="cpu", quantize="int8")
    assert again.c.converted.action == "written" and torch.equal(tokens(again), expected)
    # Another file under this name (a hash collision, a copy from elsewhere): its metadata differs.
    other = shutil.copytree(model, model.parent / "other")
    elsewhere = Pipeline.from_folder(other, device="cpu", quantize="int8").c.converted.path
    shutil.copy(elsewhere, path)
    assert Pipeline.from_folder(model, device="cpu", quantize="int8").c.converted.action == "written"


def test_an_unwritable_cache_warns_and_still_loads(home, model):
    home.parent.mkdir(parents=True)
    home.write_text("not a folder")  # mkdir fails as on a read-only disk (root ignores permissions)
    pipe = Pipeline.from_folder(model, device="cpu", quantize="int8")
    assert pipe.c.converted.action == "converted"
    assert len(pipe.warnings) == 1 and "converted again at every load" in pipe.warnings[0] and converted.ENV in pipe.warnings[0]
    assert tokens(pipe).shape == (2, pipe.c.transformer.cfg.num_tokens)


@pytest.mark.parametrize("how", ["env", "argument", "exact", "small"])
def test_nothing_is_written_when_off_or_pointless(home, model, monkeypatch, how):
    options = dict(quantize="int8")
    if how == "env":
        monkeypatch.setenv(converted.ENV, "0")
    elif how == "argument":
        options["cache_converted"] = False
    elif how == "exact":
        options = dict(exact=True)
    else:
        monkeypatch.setattr(converted, "MIN_PARAMETERS", 10**9)  # the real threshold's side of a tiny model
    pipe = Pipeline.from_folder(model, device="cpu", **options)
    assert pipe.c.converted.action == ("none" if how == "exact" else "converted") and entries(home) == []


def test_verbose_says_where_the_converted_weights_are(home, model, capsys):
    from vqgen.cli import main

    args = ["a red bus", "--model", str(model), "--quantize", "int8", "--steps", "2", "--verbose", "-o", str(model.parent / "a.png")]
    assert main(args) == 0
    assert "converted weights written to" in capsys.readouterr().err
    assert main(args) == 0
    assert "converted weights read from" in capsys.readouterr().err


def test_vqgen_models_lists_them_and_drops_those_of_a_deleted_model(home, model, tmp_path, monkeypatch, capsys):
    from vqgen.cli import main

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))  # an empty hub cache
    path = Pipeline.from_folder(model, device="cpu", quantize="int8").c.converted.path
    assert main(["models"]) == 0
    err = capsys.readouterr().err
    assert "converted weights" in err and "1 file(s)" in err and str(home) in err
    shutil.rmtree(model)  # the model is gone (as after `hf cache rm`): its converted copy goes too
    assert main(["models"]) == 0
    assert not path.exists() and "converted weights" not in capsys.readouterr().err
