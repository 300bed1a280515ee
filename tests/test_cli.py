"""The `vqgen` command as a user runs it: outputs, stdout/stderr discipline, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqgen.cli import main
from vqgen.metadata import read_record

import tiny_checkpoint as tc


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, *needles):
    assert code != 0
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vqgen: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_default_command_equals_generate_and_matches_reference(capsys, tmp_path, ithq_folder, ref_pipe, reference):
    code, out, err = run(capsys, "a red bus", "-m", ithq_folder, "-o", tmp_path / "a.png", "--seed", 3, "--exact")
    assert code == 0, err
    assert out.splitlines() == [str(tmp_path / "a.png")]
    code, out, _ = run(capsys, "generate", "a red bus", "-m", ithq_folder, "-o", tmp_path / "b.png", "--seed", 3, "--exact")
    assert code == 0
    a, b = (np.asarray(Image.open(tmp_path / n)) for n in ("a.png", "b.png"))
    assert np.array_equal(a, b)
    assert np.array_equal(a, reference(ref_pipe, "a red bus", 3)[1])


def test_num_images_names_seeds_and_parent_folders(capsys, tmp_path, diffusers_folder, ref_pipe, reference):
    target = tmp_path / "new" / "deeper" / "bus.png"
    code, out, err = run(capsys, "a blue boat", "-m", diffusers_folder, "-o", target, "-n", 2, "--seed", 40, "--guidance", 1, "--truncation", 0.86, "--exact")
    assert code == 0, err
    paths = [Path(p) for p in out.splitlines()]
    assert paths == [target.with_name("bus-0.png"), target.with_name("bus-1.png")]
    for i, p in enumerate(paths):
        assert np.array_equal(np.asarray(Image.open(p)), reference(ref_pipe, "a blue boat", 40 + i, 1.0, 0.86)[1])


def test_prompt_equal_to_a_command_name(capsys, tmp_path, diffusers_folder):
    code, out, err = run(capsys, "--", "generate", "-m", diffusers_folder, "-o", tmp_path / "g.png", "--seed", 1, "-q")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "g.png")
    assert err == ""


def test_random_seed_is_reported(capsys, tmp_path, diffusers_folder):
    code, out, err = run(capsys, "a cat", "-m", diffusers_folder, "-o", tmp_path / "c.png", "--steps", 5)
    assert code == 0
    assert err.startswith("seed ")
    int(err.split()[1])


def test_default_output_name_comes_from_the_prompt(capsys, tmp_path, diffusers_folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "../../etc/A Red  Bus!", "-m", diffusers_folder, "--seed", 1, "--steps", 3)
    assert code == 0, err
    assert out.strip() == "etc-a-red-bus.png"
    assert (tmp_path / "etc-a-red-bus.png").is_file()


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--steps", "0"], ["--steps"]),
        (["--steps", "101"], ["--steps", "1..100"]),
        (["--truncation", "0"], ["--truncation"]),
        (["--truncation", "1.5"], ["--truncation"]),
        (["--guidance", "-1"], ["--guidance"]),
        (["-n", "0"], ["-n"]),
        (["--seed", "abc"], ["--seed"]),
        (["--device", "cuda"], ["cuda", "not available"]),
        (["--device", "tpu"], ["tpu"]),
        (["--dtype", "float8"], ["float8"]),
        (["--schedule", "zigzag"], ["zigzag"]),
    ],
)
def test_bad_options(capsys, tmp_path, diffusers_folder, args, needles):
    code, out, err = run(capsys, "a cat", "-m", diffusers_folder, "-o", tmp_path / "x.png", *args)
    assert_one_line_error(code, out, err, *needles)
    assert not any(tmp_path.iterdir())


def test_unwritable_output(capsys, tmp_path, diffusers_folder):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = run(capsys, "a cat", "-m", diffusers_folder, "-o", blocker / "x.png")
    assert_one_line_error(code, out, err, "output folder")
    code, out, err = run(capsys, "a cat", "-m", diffusers_folder, "-o", tmp_path)
    assert_one_line_error(code, out, err, "is a folder")
    code, out, err = run(capsys, "a cat", "-m", diffusers_folder, "-o", tmp_path / "x.gif")
    assert_one_line_error(code, out, err, ".png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder(capsys, tmp_path, diffusers_folder):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    code, out, err = run(capsys, "a cat", "-m", diffusers_folder, "-o", ro / "x.png")
    assert_one_line_error(code, out, err, "cannot write")


def test_missing_model(capsys, tmp_path):
    code, out, err = run(capsys, "a cat", "-m", tmp_path / "nope", "-o", tmp_path / "x.png")
    assert_one_line_error(code, out, err, "does not exist")
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "a cat", "-m", tmp_path / "empty", "-o", tmp_path / "x.png")
    assert_one_line_error(code, out, err, "model_index.json")
    assert not (tmp_path / "x.png").exists()


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from vqgen.cli import main\n"
        "for args in (['--help'], ['generate', '--help']):\n"
        "    try: main(args)\n"
        "    except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub', 'diffusers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "generate" in result.stdout


def test_console_script_end_to_end(tmp_path, ithq_folder):
    """The installed entry point, in a real process, with stderr not a terminal (no progress bar).
    The ITHQ layout's old tokenizer files make the Rust tokenizer print to stdout: it must not leak."""
    out = tmp_path / "e2e.png"
    result = subprocess.run(
        ["vqgen", "a red bus", "-m", str(ithq_folder), "-o", str(out), "--seed", "5", "--steps", "10"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}\n"
    assert "Traceback" not in result.stderr and "\r" not in result.stderr
    assert Image.open(out).size == (tc.IMAGE_SIDE, tc.IMAGE_SIDE)
    assert result.stderr == "", result.stderr  # --seed given: nothing to report
    bad = subprocess.run(["vqgen", "a red bus", "-m", str(ithq_folder), "--steps", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_images_get_ordinary_permissions(capsys, tmp_path, diffusers_folder):
    old = os.umask(0o022)
    try:
        code, out, err = run(capsys, "a cat", "-m", diffusers_folder, "-o", tmp_path / "p.png", "--steps", 2, "--seed", 1)
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "p.png").stat().st_mode & 0o777 == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_paths_stay_on_stdout_when_stderr_is_a_terminal(tmp_path, diffusers_folder):
    """With the progress bar live on a terminal, rich must not capture stdout: `vqgen ... | xargs`
    on a terminal still gets the paths on stdout."""
    import pty

    out = tmp_path / "tty.png"
    primary, secondary = pty.openpty()
    result = subprocess.run(
        ["vqgen", "a red bus", "-m", str(diffusers_folder), "-o", str(out), "--seed", "1", "--steps", "3"],
        stdout=subprocess.PIPE, stderr=secondary, timeout=120,
    )
    os.close(secondary)
    terminal = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    os.close(primary)
    assert result.returncode == 0
    assert result.stdout.decode() == f"{out}\n"
    assert b"denoising" in terminal  # the bar was drawn on the terminal


# -- diffusers' own test components: the transformer knows 12 of the scheduler's 100 timesteps --

def test_default_steps_run_the_whole_usable_chain(capsys, tmp_path, dummy_folders, dummy_pipes, reference):
    code, out, err = run(capsys, "a red bus", "-m", dummy_folders["plain"], "-o", tmp_path / "a.png", "--seed", 3, "--exact")
    assert code == 0, err
    assert "Traceback" not in err
    record = read_record(tmp_path / "a.png")
    assert record["steps"] == 12
    # The whole usable chain (11..0) is diffusers' num_inference_steps=12.
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), reference(dummy_pipes["plain"], "a red bus", 3, 5.0, 1.0, 12)[1])
    code, out, err = run(capsys, "a red bus", "-m", dummy_folders["plain"], "-o", tmp_path / "b.png", "--seed", 3,
                         "--schedule", "diffusers", "--steps", 2, "--exact")
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), reference(dummy_pipes["plain"], "a red bus", 3, 5.0, 1.0, 2)[1])


@pytest.mark.parametrize("schedule", ["strided", "diffusers"])
def test_steps_beyond_the_usable_chain_are_one_line(capsys, tmp_path, dummy_folders, schedule):
    code, out, err = run(capsys, "a cat", "-m", dummy_folders["plain"], "-o", tmp_path / "x.png", "--steps", 13, "--schedule", schedule)
    assert_one_line_error(code, out, err, "--steps 13 is out of range", "transformer knows only timesteps 0..11 of its scheduler's 100", "use 1..12")
    assert not any(tmp_path.iterdir())


def test_batch_line_beyond_the_usable_chain_is_one_line(capsys, tmp_path, dummy_folders):
    (tmp_path / "p.txt").write_text('{"prompt": "a"}\n{"prompt": "b", "steps": 20}\n')
    code, out, err = run(capsys, "batch", tmp_path / "p.txt", tmp_path / "out", "-m", dummy_folders["plain"])
    assert_one_line_error(code, out, err, "p.txt:2: steps 20 is out of range: this model's transformer knows only timesteps 0..11")
    assert not list(tmp_path.glob("out/*.png"))
    code, out, err = run(capsys, "batch", tmp_path / "p.txt", tmp_path / "out", "-m", dummy_folders["plain"], "--steps", 13)
    assert_one_line_error(code, out, err, "--steps 13 is out of range", "use 1..12")
