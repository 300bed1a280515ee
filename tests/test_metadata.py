"""Images that explain themselves: PNG text chunks, `vqgen info`, --from-image, no silent overwrite."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vqgen
from vqgen.cli import main
from vqgen.kernels import plan_for


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_png_chunks(capsys, tmp_path, diffusers_folder):
    code, out, err = run(capsys, "ein Bär, 東京", "-m", diffusers_folder, "-o", tmp_path / "a.png", "--seed", 42,
                         "--steps", 25, "--truncation", 0.86, "--sampler", "purity")
    assert code == 0, err
    text = Image.open(tmp_path / "a.png").text
    prompt_line, params = text["parameters"].split("\n")
    assert prompt_line == "ein Bär, 東京"
    assert params.startswith("Steps: 25, Schedule: strided, Sampler: purity, Purity weight: 1.0, Guidance: 5.0, Truncation: 0.86, Seed: 42, Size: 16x16, Model: ")
    assert params.endswith(f"Version: vqgen {vqgen.__version__}")
    record = json.loads(text["vqgen"])
    assert record["prompt"] == "ein Bär, 東京" and record["seed"] == 42 and record["steps"] == 25
    # The default is the fast path the CPU at hand decides (bfloat16 where it has bf16 units).
    fast = plan_for(torch.device("cpu"), None)
    assert record["dtype"] == str(fast.transformer_dtype).removeprefix("torch.") and record["device"] == "cpu"
    assert record["mode"] == "fast" and record["kernels"] == fast.describe()
    assert set(record["versions"]) == {"vqgen", "torch", "transformers"}


def test_info_table_and_json(capsys, tmp_path, diffusers_folder):
    run(capsys, "a red bus", "-m", diffusers_folder, "-o", tmp_path / "a.png", "--seed", 7, "--steps", 5)
    code, out, _ = run(capsys, "info", tmp_path / "a.png", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["prompt"] == "a red bus" and data["seed"] == 7
    code, out, _ = run(capsys, "info", tmp_path / "a.png")
    assert code == 0 and "a red bus" in out and "seed" in out
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    code, out, err = run(capsys, "info", tmp_path / "plain.png")
    assert code != 0 and "no vqgen metadata" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, "info", tmp_path / "missing.png")
    assert code != 0 and "no such file" in err


def test_from_image_regenerates_identically_and_options_win(capsys, tmp_path, diffusers_folder):
    run(capsys, "a green tree", "-m", diffusers_folder, "-o", tmp_path / "a.png", "--seed", 11, "--steps", 12,
        "--guidance", 3, "--truncation", 0.9, "--schedule", "diffusers")
    code, out, err = run(capsys, "--from-image", tmp_path / "a.png", "-o", tmp_path / "b.png")
    assert code == 0, err
    a, b = (np.asarray(Image.open(tmp_path / n)) for n in ("a.png", "b.png"))
    assert np.array_equal(a, b)
    assert json.loads(Image.open(tmp_path / "b.png").text["vqgen"])["schedule"] == "diffusers"
    code, out, err = run(capsys, "--from-image", tmp_path / "a.png", "-o", tmp_path / "c.png", "--seed", 12)
    assert code == 0
    record = json.loads(Image.open(tmp_path / "c.png").text["vqgen"])
    assert record["seed"] == 12 and record["steps"] == 12 and record["guidance"] == 3.0
    assert not np.array_equal(a, np.asarray(Image.open(tmp_path / "c.png")))


def test_never_overwrite_silently(capsys, tmp_path, diffusers_folder):
    target = tmp_path / "bus.png"
    for _ in range(2):
        code, out, err = run(capsys, "a bus", "-m", diffusers_folder, "-o", target, "--steps", 3, "--seed", 1)
    assert out.strip() == str(tmp_path / "bus-1.png")
    assert "exists" in err
    code, out, err = run(capsys, "a bus", "-m", diffusers_folder, "-o", target, "--steps", 3, "--seed", 2, "--overwrite")
    assert out.strip() == str(target)
    assert json.loads(Image.open(target).text["vqgen"])["seed"] == 2


def test_json_lines_and_grid(capsys, tmp_path, diffusers_folder):
    code, out, err = run(capsys, "a cat", "-m", diffusers_folder, "-o", tmp_path / "cat.png", "-n", 3, "--steps", 3,
                         "--seed", 5, "--json", "--grid")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line.get("seed") for line in lines[:3]] == [5, 6, 7]
    assert all(line["seconds"] >= 0 and line["prompt"] == "a cat" for line in lines[:3])
    assert lines[3]["path"].endswith("cat-grid.png")
    sheet = Image.open(lines[3]["path"])
    assert sheet.size == (2 * 16 + 2, 2 * 16 + 2)


@pytest.mark.parametrize("mode", [["--exact"], ["--quantize", "int8"], ["--dtype", "float32"]])
def test_from_image_keeps_the_kernels(capsys, tmp_path, diffusers_folder, mode):
    """An image made in exact, int8 or an explicit dtype is made again the same way; --exact on the
    command line wins over the recorded mode."""
    code, _, err = run(capsys, "a red bus", "-m", diffusers_folder, "-o", tmp_path / "a.png", "--seed", 5, "--steps", 8, *mode)
    assert code == 0, err
    first = json.loads(Image.open(tmp_path / "a.png").text["vqgen"])
    code, _, err = run(capsys, "--from-image", tmp_path / "a.png", "-o", tmp_path / "b.png")
    assert code == 0, err
    again = json.loads(Image.open(tmp_path / "b.png").text["vqgen"])
    assert (again["mode"], again["dtype"], again["kernels"]) == (first["mode"], first["dtype"], first["kernels"])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))
    code, _, err = run(capsys, "--from-image", tmp_path / "a.png", "-o", tmp_path / "c.png", "--exact")
    assert code == 0, err
    assert json.loads(Image.open(tmp_path / "c.png").text["vqgen"])["mode"] == "exact"
