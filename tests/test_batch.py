"""`vqgen batch`: prompt files, safe names, seeds, batching that changes no image, resuming,
failures, Ctrl-C, and two torchrun processes giving the same images as one."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqgen.batch import jobs as joblib
from vqgen.batch import manifest
from vqgen.batch.prompts import parse, read_source
from vqgen.cli import common, main
from vqgen.errors import UsageError
from vqgen.metadata import read_record

STEPS = "10"  # exactness against the reference is tested elsewhere; 10 steps keep this fast
PROMPTS = [
    {"prompt": "a red bus"},
    {"prompt": "a cat on a mat", "n": 2},
    {"prompt": "a red bus", "seed": 7},  # a duplicate prompt, with its own seed
    {"prompt": "blue sky over hills", "guidance": 1},  # its own settings: a batch of its own
    {"prompt": "ein Café am Meer ☕", "truncation": 0.9},
    {"prompt": "a red bus"},
]


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def pixels(folder: Path) -> dict[str, bytes]:
    return {p.name: np.asarray(Image.open(p)).tobytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("# mixed prompts and settings\n\n" + "\n".join(json.dumps(p, ensure_ascii=False) for p in PROMPTS) + "\n", encoding="utf-8")
    return path


_PIPES = {}


@pytest.fixture(autouse=True)
def load_once(monkeypatch):
    """Load each model once per test session: the runs under test are what matters here."""
    real = common.load_pipeline

    def load(resolved, device, dtype=None, *, quiet, **kernels):
        key = (str(resolved.path), str(device), str(dtype), tuple(sorted(kernels.items())))
        if key not in _PIPES:
            _PIPES[key] = real(resolved, device, dtype, quiet=quiet, **kernels)
        return _PIPES[key]

    monkeypatch.setattr(common, "load_pipeline", load)


@pytest.fixture(scope="module")
def batch1(prompt_file, diffusers_folder, tmp_path_factory):
    """The same prompts one image at a time: the reference for every other run."""
    out = tmp_path_factory.mktemp("b1")
    assert main(["batch", str(prompt_file), str(out), "-m", str(diffusers_folder), "--steps", STEPS, "--seed", "100", "-b", "1", "-q"]) == 0
    return out


# -- prompt files -------------------------------------------------------------------------------

def test_text_file_with_bom_comments_blank_lines_and_crlf():
    lines = parse("\ufeffa red bus\r\n# not a prompt\r\n\r\n  a cat  \r\n{not json in a text file}\n".encode())
    assert [(l.line, l.prompt) for l in lines] == [(1, "a red bus"), (4, "a cat"), (5, "{not json in a text file}")]


def test_json_lines_fields():
    lines = parse(b'# c\n{"prompt": "a", "seed": 3, "steps": 5, "guidance": 1, "truncation": 0.86, "n": 2}\n\n{"prompt": "b"}\n')
    assert (lines[0].line, lines[0].seed, lines[0].steps, lines[0].guidance, lines[0].truncation, lines[0].n) == (2, 3, 5, 1.0, 0.86, 2)
    assert (lines[1].line, lines[1].prompt, lines[1].seed) == (4, "b", None)


@pytest.mark.parametrize("bad, needle", [
    (b'{"prompt": "a"}\n\n{"prompt": "b",}\n', "prompts:3: not valid JSON"),
    (b'{"prompt": "a"}\n{"prompt": "b", "steeps": 4}\n', "prompts:2: unknown key 'steeps'"),
    (b'{"prompt": "a", "seed": 1.5}\n', "prompts:1: \"seed\" must be a whole number"),
    (b'{"prompt": "a", "n": 0}\n', "prompts:1: \"n\" 0 is out of range"),
    (b'{"prompt": ""}\n', "prompts:1: \"prompt\" must be a non-empty string"),
    (b'{"prompt": "a", "truncation": 2}\n', "prompts:1: truncation 2.0 is out of range"),
    (b'{"prompt": "a", "guidance": NaN}\n', "must be a finite number"),
    (b'{"prompt": "a"}\n["b"]\n', "prompts:2: expected a JSON object"),
    (b"fine\nbad \xff byte\n", "prompts:2: not valid UTF-8"),
    (b"# only comments\n\n", "has no prompts"),
])
def test_malformed_lines_name_their_line(bad, needle):
    with pytest.raises(UsageError, match=re.escape(needle)):
        parse(bad)


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("a\nb\n".encode())))
    assert [l.prompt for l in parse(read_source("-"))] == ["a", "b"]


# -- jobs: seeds, names, shares, batches ---------------------------------------------------------

def test_seeds_names_and_expansion():
    lines = parse(b'{"prompt": "x", "n": 2}\n{"prompt": "x", "seed": 50, "n": 2}\n{"prompt": "y", "steps": 3}\n')
    jobs = joblib.expand(lines, 1000, steps=None, guidance=5.0, truncation=1.0, num_images=1)
    assert [(j.index, j.seed, j.steps) for j in jobs] == [(0, 1000, None), (1, 1001, None), (2, 50, None), (3, 51, None), (4, 1004, 3)]
    assert [j.name for j in jobs][:3] == ["0000-1000-x.png", "0001-1001-x.png", "0002-50-x.png"]
    with pytest.raises(UsageError, match="too large"):
        joblib.expand(lines, 2**63 - 2, steps=None, guidance=5.0, truncation=1.0, num_images=1)


def test_names_are_safe_unique_and_short(tmp_path):
    hostile = ["../../etc/passwd", "/abs/path", "..", ".hidden", "a/b\\c", "CON", "\u202etxt.exe", "🙂🙂",
               "x" * 5000, "é" * 300, "a red bus", "a red bus", "A  RED  BUS!"]
    lines = parse("\n".join(json.dumps({"prompt": p}) for p in hostile).encode())
    jobs = joblib.expand(lines, 2**63 - 100, steps=None, guidance=5.0, truncation=1.0, num_images=1)
    names = [j.name for j in jobs]
    assert len(set(names)) == len(names)
    for name in names:
        assert re.fullmatch(r"\d{4,}-\d+-[a-z0-9]+(-[a-z0-9]+)*\.png", name), name
        assert len(name.encode()) < 120
        assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_shares_cover_every_job_once_and_batches_never_mix_settings():
    lines = parse(b'{"prompt": "a", "n": 5}\n{"prompt": "b", "guidance": 1, "n": 3}\n{"prompt": "c", "n": 2}\n')
    jobs = joblib.expand(lines, 0, steps=None, guidance=5.0, truncation=1.0, num_images=1)
    shares = [joblib.shard(jobs, r, 3) for r in range(3)]
    assert sorted(j.index for s in shares for j in s) == list(range(10))
    groups = joblib.batches(jobs, 4)
    assert [[j.index for j in b] for b in groups] == [[0, 1, 2, 3], [4, 8, 9], [5, 6, 7]]
    assert all(len({j.group for j in b}) == 1 for b in groups)


def _append_many(path, worker):
    for i in range(150):
        manifest.append(path, {"worker": worker, "i": i, "pad": "x" * 6000})  # > PIPE_BUF: no atomicity for free


def test_concurrent_manifest_appends_never_interleave(tmp_path):
    path = tmp_path / manifest.NAME
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 601
    assert sorted((r["worker"], r["i"]) for r in map(json.loads, lines[:-1])) == [(w, i) for w in range(4) for i in range(150)]


# -- the command ---------------------------------------------------------------------------------

def test_batching_changes_no_image(capsys, prompt_file, diffusers_folder, batch1, tmp_path):
    code, out, err = run(capsys, "batch", prompt_file, tmp_path, "-m", diffusers_folder, "--steps", STEPS, "--seed", 100, "-b", 3)
    assert code == 0, err
    reference = pixels(batch1)
    assert len(reference) == 7
    assert pixels(tmp_path) == reference
    assert sorted(Path(p).name for p in out.split()) == sorted(reference)
    assert "made 7, skipped 0, failed 0 of 7 images" in err
    records = manifest.read(tmp_path / manifest.NAME)
    assert sorted(r["file"] for r in records) == sorted(reference)
    by_file = {r["file"]: r for r in records}
    assert by_file["0003-7-a-red-bus.png"]["seed"] == 7
    assert by_file["0004-104-blue-sky-over-hills.png"]["guidance"] == 1.0
    record = read_record(tmp_path / "0005-105-ein-cafe-am-meer.png")
    assert (record["prompt"], record["seed"], record["truncation"], record["steps"]) == ("ein Café am Meer ☕", 105, 0.9, 10)


def test_each_image_is_reproducible_alone(capsys, diffusers_folder, batch1, tmp_path):
    for name, prompt, seed, extra in [("0002-102-a-cat-on-a-mat.png", "a cat on a mat", 102, []),
                                      ("0005-105-ein-cafe-am-meer.png", "ein Café am Meer ☕", 105, ["--truncation", 0.9])]:
        code, _, err = run(capsys, prompt, "-m", diffusers_folder, "--steps", STEPS, "--seed", seed, *extra, "-o", tmp_path / name)
        assert code == 0, err
        assert pixels(tmp_path)[name] == pixels(batch1)[name]


def test_resume_skips_finished_images_and_cleans_temp_files(capsys, prompt_file, diffusers_folder, batch1, tmp_path):
    code, _, err = run(capsys, "batch", prompt_file, tmp_path, "-m", diffusers_folder, "--steps", STEPS, "--seed", 100, "-b", 2)
    assert code == 0, err
    kept = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.png")}
    (tmp_path / "0001-101-a-cat-on-a-mat.png").unlink()
    (tmp_path / ".0001-101-a-cat-on-a-mat.png.k3x_9q.tmp").write_bytes(b"half an image")  # a killed run's leftover
    (tmp_path / ".0099-1-gone.png.abc.tmp").write_bytes(b"from an older prompt file")
    # No --seed: the base seed of the earlier run is taken from the manifest, so names match.
    code, out, err = run(capsys, "batch", prompt_file, tmp_path, "-m", diffusers_folder, "--steps", STEPS, "-b", 2)
    assert code == 0, err
    assert out.split() == [str(tmp_path / "0001-101-a-cat-on-a-mat.png")]
    assert "made 1, skipped 6, failed 0 of 7 images" in err
    assert not list(tmp_path.glob(".*.tmp"))
    assert pixels(tmp_path) == pixels(batch1)
    assert all(p.stat().st_mtime_ns == kept[p.name] for p in tmp_path.glob("*.png") if p.name != "0001-101-a-cat-on-a-mat.png")
    files = [r["file"] for r in manifest.read(tmp_path / manifest.NAME)]
    assert sorted(files) == sorted([*kept, "0001-101-a-cat-on-a-mat.png"])  # the remade image twice, nothing else

    # Other settings into the same folder would silently mix two runs: refused, one line, no work.
    code, out, err = run(capsys, "batch", prompt_file, tmp_path, "-m", diffusers_folder, "--steps", STEPS, "--guidance", 3)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "already exists but was not made by this run (its guidance is 5.0, this run's is 3.0)" in err


def test_a_failure_is_recorded_and_the_batch_goes_on(capsys, monkeypatch, diffusers_folder, tmp_path):
    from vqgen.pipeline import Pipeline

    real = Pipeline.generate

    def flaky(self, prompts, seeds, settings, on_step=None):
        if "cursed" in prompts:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")
        return real(self, prompts, seeds, settings, on_step)

    monkeypatch.setattr(Pipeline, "generate", flaky)
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ncursed\nthree\nfour\n")
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "batch", prompts, out_dir, "-m", diffusers_folder, "--steps", 2, "--seed", 1, "-b", 2)
    assert code == 1
    assert sorted(p.name for p in out_dir.glob("*.png")) == ["0000-1-one.png", "0002-3-three.png", "0003-4-four.png"]
    assert "failed: 0001-2-cursed.png (line 2): RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" in err
    assert "made 3, skipped 0, failed 1 of 4 images" in err and "Traceback" not in err
    errors = [r for r in manifest.read(out_dir / manifest.NAME) if "error" in r]
    assert [(r["file"], r["seed"]) for r in errors] == [("0001-2-cursed.png", 2)]

    monkeypatch.setattr(Pipeline, "generate", real)  # the problem is gone: a re-run retries only it
    code, out, err = run(capsys, "batch", prompts, out_dir, "-m", diffusers_folder, "--steps", 2, "-b", 2)
    assert code == 0, err
    assert out.split() == [str(out_dir / "0001-2-cursed.png")]


def test_ctrl_c_stops_cleanly_with_130(capsys, monkeypatch, diffusers_folder, tmp_path):
    from vqgen.pipeline import Pipeline

    real, calls = Pipeline.generate, []

    def interrupted(self, prompts, seeds, settings, on_step=None):
        calls.append(prompts)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, prompts, seeds, settings, on_step)

    monkeypatch.setattr(Pipeline, "generate", interrupted)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\nc\n")
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "batch", prompts, out_dir, "-m", diffusers_folder, "--steps", 2, "--seed", 1)
    assert code == 130
    assert "interrupted after" in err and "made 1, skipped 0, failed 0 of 3 images" in err and "Traceback" not in err
    assert [p.name for p in out_dir.iterdir() if p.name != manifest.NAME] == ["0000-1-a.png"]
    monkeypatch.setattr(Pipeline, "generate", real)
    code, out, err = run(capsys, "batch", prompts, out_dir, "-m", diffusers_folder, "--steps", 2, "-q")
    assert code == 0 and len(out.split()) == 2 and err == ""


@pytest.mark.parametrize("content, args, needle", [
    ('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": 3}\n', [], "p.txt:3: \"prompt\" must be a non-empty string"),
    ('{"prompt": "a", "steps": 101}\n', [], "p.txt:1: steps 101 is out of range: this model's chain has 100 steps"),
    ("a\n", ["-b", 0], "--batch-size 0 is out of range"),
    ("a\n", ["--seed", -1], "--seed -1 is out of range"),
])
def test_mistakes_are_one_line_before_any_work(capsys, diffusers_folder, tmp_path, content, args, needle):
    (tmp_path / "p.txt").write_text(content)
    code, out, err = run(capsys, "batch", tmp_path / "p.txt", tmp_path / "out", "-m", diffusers_folder, *args)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"vqgen: error: {needle}"] or needle in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("out/*.png"))


def test_missing_prompt_file_and_outdir_that_is_a_file(capsys, tmp_path):
    code, _, err = run(capsys, "batch", tmp_path / "nope.txt", tmp_path / "out")
    assert code == 2 and "does not exist" in err
    (tmp_path / "p.txt").write_text("a\n")
    (tmp_path / "file").write_text("")
    code, _, err = run(capsys, "batch", tmp_path / "p.txt", tmp_path / "file")
    assert code == 2 and "is a file" in err


def test_two_torchrun_processes_make_the_same_images(prompt_file, diffusers_folder, batch1, tmp_path):
    """torchrun --nproc_per_node 2 on the CPU (gloo), no --seed: rank 0 draws the base seed and the
    other rank receives it; a one-process run with that seed must give the very same files."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "vqgen", "batch", str(prompt_file), str(tmp_path / "dist"), "-m", str(diffusers_folder),
               "--steps", STEPS, "-b", "2", "--device", "auto"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    records = manifest.read(tmp_path / "dist" / manifest.NAME)
    assert len(records) == 7 and len({r["base_seed"] for r in records}) == 1
    base = records[0]["base_seed"]
    assert "made 7, skipped 0, failed 0 of 7 images" in done.stderr
    assert main(["batch", str(prompt_file), str(tmp_path / "one"), "-m", str(diffusers_folder), "--steps", STEPS,
                 "--seed", str(base), "-q"]) == 0
    assert pixels(tmp_path / "dist") == pixels(tmp_path / "one")
    if base == 100:  # then it is also the batch-size-1 reference itself
        assert pixels(tmp_path / "dist") == pixels(batch1)


RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
from vqgen.batch import distributed
world = distributed.detect()
group = distributed.Group(world)
seed = group.broadcast_int(1234 if world.main else -1)
totals = group.sum_ints([world.rank + 1, 10 * world.rank])
group.close()
print(json.dumps({"seed": seed, "totals": totals, "process_group": dist.is_initialized()}))
"""


def test_ranks_meet_over_the_store_without_a_process_group():
    """Started without torchrun (rank 0 hosts the store): the seed and the counts cross, and no
    gloo process group exists, whose worker threads used to abort the process at exit."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-c", RANK_SCRIPT], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["seed"] for r in results] == [1234, 1234]
    assert [r["totals"] for r in results] == [[3, 10], [3, 10]]
    assert not any(r["process_group"] for r in results)


def test_master_addr_without_port_is_one_line(monkeypatch):
    from vqgen.batch import distributed

    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(UsageError, match="MASTER_PORT"):
        distributed.detect()
