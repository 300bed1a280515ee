"""Hub downloads, the cache, conversion and `--model REPO_ID`, over real HTTP against tests/fake_hub.py.

Nothing of huggingface_hub is mocked: the CLI runs in a subprocess with HF_ENDPOINT pointing at the
local server and HF_HUB_CACHE at a fresh folder, exactly as a user's shell would set them.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hub_fixtures import BIG, BIG_FILE, NOT_PIPELINE, REPO, hub, ithq_layout  # noqa: F401  (fixtures)

import tiny_checkpoint as tc

VQGEN = str(Path(sys.executable).parent / "vqgen")
FP16_FILES = {
    "model_index.json", "scheduler/scheduler_config.json",
    "transformer/config.json", "transformer/diffusion_pytorch_model.fp16.safetensors",
    "vqvae/config.json", "vqvae/diffusion_pytorch_model.fp16.safetensors",
    "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
    "learned_classifier_free_sampling_embeddings/config.json",
    "learned_classifier_free_sampling_embeddings/diffusion_pytorch_model.fp16.safetensors",
    "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
}
BINS = ["transformer/diffusion_pytorch_model.bin", "vqvae/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin",
        "learned_classifier_free_sampling_embeddings/diffusion_pytorch_model.bin"]


def env_for(cache: Path, endpoint: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


def run(args, cache, endpoint, preexec=None, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([VQGEN, *args], env=env_for(cache, endpoint, **extra), capture_output=True, text=True,
                          timeout=120, preexec_fn=preexec)


def assert_one_line_error(r, *needles):
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if not line.startswith("Ignored unknown kwarg")]
    assert len(lines) == 1 and lines[0].startswith("vqgen: error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert r.stdout == ""


def snapshot(cache: Path, commit: str) -> Path:
    return cache / "models--microsoft--vq-diffusion-ithq" / "snapshots" / commit


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def no_partial_files(cache: Path) -> bool:
    return not any(p.name.endswith((".incomplete", ".tmp")) or p.name.startswith(".tmp-") for p in cache.rglob("*"))


def vqgen_home(cache: Path) -> Path:
    """Where vqgen keeps its own files when only HF_HUB_CACHE is set (as env_for sets it)."""
    return cache.parent / "vqgen"


def assert_cache_scans_clean(cache: Path) -> None:
    """huggingface_hub's own view of the cache (what `hf cache ls` and `hf cache rm` use): no
    warnings, so nothing of vqgen's lies inside it."""
    from huggingface_hub import scan_cache_dir

    if not cache.exists():
        return
    info = scan_cache_dir(cache)
    assert info.warnings == [], [str(w) for w in info.warnings]
    assert {p.name for p in cache.iterdir() if p.is_dir()} <= {r.repo_path.name for r in info.repos} | {".locks"}


def test_dry_run_lists_files_and_downloads_nothing(hub, tmp_path):
    r = run(["download", REPO, "--dry-run"], tmp_path / "cache", hub.url)
    assert r.returncode == 0, r.stderr
    listed = {line.split()[-1] for line in r.stdout.splitlines()[:-1]}
    assert listed == FP16_FILES
    total = sum(len(b) for p, b in hub.repos[REPO].commits[hub.commits["main"]].items() if p in FP16_FILES)
    assert r.stdout.splitlines()[-1].startswith(f"total {total / 1e6:.1f} MB in 14 files (fp16, commit {hub.commits['main']})")
    assert not (tmp_path / "cache" / "models--microsoft--vq-diffusion-ithq").exists()
    assert_cache_scans_clean(tmp_path / "cache")


def test_fp16_download_exact_files_then_rerun_is_a_no_op(hub, tmp_path, ithq_layout):
    cache = tmp_path / "cache"
    r = run(["download", REPO], cache, hub.url)
    assert r.returncode == 0, r.stderr
    snap = snapshot(cache, hub.commits["main"])
    assert r.stdout == f"{snap}\n"
    assert files_in(snap) == FP16_FILES  # configs, tokenizer, fp16 safetensors: no pickle at all
    assert not any(p.name.endswith(".bin") for p in cache.rglob("*"))
    for rel in FP16_FILES:
        assert (snap / rel).read_bytes() == (ithq_layout / rel).read_bytes()

    before = len(hub.requests)
    r = run(["download", REPO], cache, hub.url)
    assert r.returncode == 0 and r.stdout == f"{snap}\n"
    assert "already in the cache; nothing to do" in r.stderr
    assert not [p for _, p, _ in hub.requests[before:] if "/resolve/" in p]  # nothing fetched

    r = run(["download", REPO, "--quiet"], cache, hub.url)
    assert (r.returncode, r.stdout, r.stderr.replace("Ignored unknown kwarg option __type\n", "")) == (0, f"{snap}\n", "")
    assert_cache_scans_clean(cache)
    assert (vqgen_home(cache) / "models--microsoft--vq-diffusion-ithq" / f"fp16-{hub.commits['main']}.json").is_file()


def test_dropped_connection_resumes_byte_identical(hub, tmp_path):
    """The server hangs up 11 MiB into a 13 MB file. huggingface_hub keeps what it wrote (it writes in
    10 MiB chunks) and asks for the rest with a Range request; the result is byte-identical."""
    from vqgen.checkpoint import read_safetensors

    hub.drop_once(BIG_FILE, after=11 << 20)
    before = len(hub.requests)
    r = run(["download", BIG, "-q"], tmp_path / "cache", hub.url)
    assert r.returncode == 0, r.stderr
    gets = [rng for m, p, rng in hub.requests[before:] if m == "GET" and p.endswith(BIG_FILE)]
    assert gets == [None, f"bytes={10 << 20}-"]  # resumed, not restarted
    got = Path(r.stdout.strip()) / BIG_FILE
    assert got.read_bytes() == hub.repos[BIG].commits[hub.repos[BIG].refs["main"]][BIG_FILE]
    assert read_safetensors(got, "vqvae")  # and still a valid safetensors file
    assert no_partial_files(tmp_path / "cache")
    assert_cache_scans_clean(tmp_path / "cache")


def test_interrupted_run_keeps_finished_files_and_is_never_taken_for_complete(hub, tmp_path):
    cache, big = tmp_path / "cache", "vqvae/diffusion_pytorch_model.fp16.safetensors"
    hub.fail_always(big, 500)
    try:
        r = run(["download", REPO], cache, hub.url)
    finally:
        hub.clear_faults()
    assert_one_line_error(r, "HTTP 500", "try again")
    assert no_partial_files(cache)
    assert not (snapshot(cache, hub.commits["main"]) / big).exists()
    assert_cache_scans_clean(cache)
    # Offline, the partial snapshot is not mistaken for a model.
    code = "from vqgen.cli import main; raise SystemExit(main(['download', '%s']))" % REPO
    r = subprocess.run([sys.executable, "-c", code], env=env_for(cache, hub.url, HF_HUB_OFFLINE="1"), capture_output=True, text=True)
    assert_one_line_error(r, f"vqgen download {REPO}", "offline")
    listing = run(["models"], cache, hub.url).stdout
    assert "partial" in listing

    before = len(hub.requests)
    r = run(["download", REPO], cache, hub.url)
    assert r.returncode == 0, r.stderr
    fetched = [p.rsplit("/", 1)[-1] for m, p, _ in hub.requests[before:] if m == "GET" and "/resolve/" in p and "model_index" not in p]
    assert fetched == [big.rsplit("/", 1)[-1]]  # only what was missing
    assert_cache_scans_clean(cache)


def test_fp32_download_converts_once_and_never_keeps_a_pickle(hub, tmp_path, ithq_layout):
    cache = tmp_path / "cache"
    r = run(["download", REPO, "--precision", "fp32"], cache, hub.url)
    assert r.returncode == 0, r.stderr
    conv = vqgen_home(cache) / "models--microsoft--vq-diffusion-ithq" / hub.commits["main"]
    assert r.stdout == f"{conv}\n"
    assert_cache_scans_clean(cache)
    from safetensors.torch import load_file

    from vqgen.convert import converted_name

    for rel in BINS:
        original = torch.load(ithq_layout / rel, weights_only=True)
        converted = load_file(conv / Path(rel).with_name(converted_name(Path(rel).name)))
        assert converted.keys() == original.keys()  # published key names kept
        assert all(torch.equal(converted[k], original[k]) and converted[k].dtype == original[k].dtype for k in original)
    # After the verified conversion no pickle is left anywhere in the cache, so none can be read again.
    assert not any(p.name.endswith(".bin") for p in cache.rglob("*"))
    blobs = cache / "models--microsoft--vq-diffusion-ithq" / "blobs"
    assert not any((blobs / hashlib.sha256((ithq_layout / rel).read_bytes()).hexdigest()).exists() for rel in BINS)
    r = run(["download", REPO, "--precision", "fp32"], cache, hub.url)
    assert r.returncode == 0 and "already in the cache; nothing to do" in r.stderr and r.stdout == f"{conv}\n"
    # --model resolves to the converted copy (fp32 preferred once it exists), offline too.
    code = "from vqgen.hub import resolve_model; m = resolve_model('%s', offline=True); print(m.path, m.precision, m.commit)" % REPO
    out = subprocess.run([sys.executable, "-c", code], env=env_for(cache, hub.url), capture_output=True, text=True)
    assert out.stdout.split() == [str(conv), "fp32", hub.commits["main"]], out.stderr
    assert_cache_scans_clean(cache)


def test_conversion_disk_full_leaves_nothing(hub, tmp_path, monkeypatch, capsys):
    """ENOSPC injected where vqgen writes converted bytes (our layer, not huggingface_hub's)."""
    import errno

    import vqgen.convert
    from vqgen.cli import main

    def full_disk(tensors, path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    cache = tmp_path / "cache"
    for k, v in env_for(cache, hub.url).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(vqgen.convert, "_write_safetensors", full_disk)
    assert main(["download", REPO, "--precision", "fp32", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk full" in err[0] and "HF_HOME" in err[0], err
    assert not (vqgen_home(cache) / "models--microsoft--vq-diffusion-ithq" / hub.commits["main"]).exists()
    assert no_partial_files(cache) and no_partial_files(vqgen_home(cache))
    assert_cache_scans_clean(cache)


def test_download_disk_full_is_one_line_and_rerun_completes(hub, tmp_path):
    """A real write failure from the kernel: the file-size limit (EFBIG) stops the 1.5 MB weight."""
    cache = tmp_path / "cache"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    r = run(["download", REPO], cache, hub.url, preexec=limit)
    assert_one_line_error(r, "disk full", "HF_HUB_CACHE")
    assert no_partial_files(cache)
    assert not list(vqgen_home(cache).glob("*/fp16-*.json"))  # not recorded as complete
    assert_cache_scans_clean(cache)
    assert run(["download", REPO, "-q"], cache, hub.url).returncode == 0
    assert_cache_scans_clean(cache)


@pytest.mark.parametrize("case", ["unknown repo", "bad revision", "not a pipeline", "no network", "not a repo id"])
def test_hub_errors_are_one_line(hub, tmp_path, case):
    from fake_hub import closed_port_url

    endpoint, args, needles = hub.url, ["download", REPO], []
    if case == "unknown repo":
        args, needles = ["download", "nobody/nothing"], ["nobody/nothing", "no such model"]
    elif case == "bad revision":
        args, needles = ["download", REPO, "--revision", "v9"], ["no revision 'v9'"]
    elif case == "not a pipeline":
        args, needles = ["download", NOT_PIPELINE], ["StableDiffusionPipeline", "VQDiffusionPipeline"]
    elif case == "no network":
        endpoint, needles = closed_port_url(), ["cannot reach the Hub", "HF_ENDPOINT"]
    else:
        args, needles = ["download", "./not-a-repo"], ["org/name"]
    r = run(args, tmp_path / "cache", endpoint)
    assert_one_line_error(r, *needles)
    assert not list((tmp_path / "cache").glob("models--*/snapshots/*/*"))  # nothing written
    assert_cache_scans_clean(tmp_path / "cache")


def test_offline_without_cache_says_to_download(hub, tmp_path):
    r = run(["download", REPO], tmp_path / "cache", hub.url, HF_HUB_OFFLINE="1")
    assert_one_line_error(r, f"vqgen download {REPO}", "offline")
    r = run(["generate", "a red bus", "-m", REPO, "--revision", "v1", "-o", str(tmp_path / "x.png")], tmp_path / "cache", hub.url, HF_HUB_OFFLINE="1")
    assert_one_line_error(r, f"vqgen download {REPO} --revision v1")
    assert_cache_scans_clean(tmp_path / "cache")


def test_pinned_revision_listing_and_removal(hub, tmp_path):
    cache = tmp_path / "cache"
    assert run(["download", REPO, "-q"], cache, hub.url).returncode == 0
    r = run(["download", REPO, "--revision", "v1", "-q"], cache, hub.url)
    assert r.stdout.strip() == str(snapshot(cache, hub.commits["v1"]))
    assert_cache_scans_clean(cache)
    assert "README.md" not in files_in(Path(r.stdout.strip()))  # only what the model needs
    # Offline, the tag resolves through the cache's refs to its own commit.
    code = "from vqgen.hub import resolve_model; m = resolve_model('%s', revision='v1'); print(m.commit, m.precision)" % REPO
    out = subprocess.run([sys.executable, "-c", code], env=env_for(cache, hub.url, HF_HUB_OFFLINE="1"), capture_output=True, text=True)
    assert out.stdout.split() == [hub.commits["v1"], "fp16"], out.stderr

    # The Hub unreachable: a complete cached copy is still used, and the user is told.
    from fake_hub import closed_port_url

    r = run(["download", REPO], cache, closed_port_url())
    assert r.returncode == 0 and "the Hub is unreachable; using the cached" in r.stderr
    assert r.stdout.strip() == str(snapshot(cache, hub.commits["main"]))

    rows = run(["models"], cache, hub.url).stdout.splitlines()
    assert rows[0].split() == ["REPO", "REVISION", "COMMIT", "PRECISION", "SIZE"]
    by_commit = {row.split()[2]: row.split() for row in rows[1:]}
    assert by_commit[hub.commits["main"][:7]][:4] == [REPO, "main", hub.commits["main"][:7], "fp16"]
    assert by_commit[hub.commits["v1"][:7]][1] == "v1"

    assert_one_line_error(run(["models", "--remove", REPO, "--revision", "v1"], cache, hub.url), "--yes")
    r = run(["models", "--remove", REPO, "--revision", "v1", "--yes"], cache, hub.url)
    assert r.returncode == 0, r.stderr
    assert not snapshot(cache, hub.commits["v1"]).exists() and snapshot(cache, hub.commits["main"]).is_dir()
    assert not list(vqgen_home(cache).glob(f"*/fp16-{hub.commits['v1']}.json"))
    assert_cache_scans_clean(cache)
    assert run(["download", REPO, "-q"], cache, hub.url).stderr.count("nothing") == 0  # main intact, quiet
    assert run(["models", "--remove", REPO, "--yes"], cache, hub.url).returncode == 0
    assert not (cache / "models--microsoft--vq-diffusion-ithq").exists()
    assert not (vqgen_home(cache) / "models--microsoft--vq-diffusion-ithq").exists()
    assert_cache_scans_clean(cache)
    assert "no VQ-Diffusion models" in run(["models"], cache, hub.url).stderr


def test_generate_through_repo_id_matches_local_folder(hub, tmp_path):
    """`vqgen generate -m REPO` on an empty cache announces the size, downloads fp16 and draws the
    same pixels as the same fp16 weights loaded from a local folder; the PNG names the exact commit."""
    from PIL import Image

    from vqgen.pipeline import Pipeline, Settings

    cache = tmp_path / "cache"
    proc = subprocess.Popen([VQGEN, "generate", "a red bus", "-m", REPO, "--seed", "1", "--steps", "100", "--exact", "-o", str(tmp_path / "hub.png")],
                            env=env_for(cache, hub.url, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Meanwhile (two cores), the reference: the same fp16 weights from a local folder, in this process.
    local = tc.save_ithq_layout(tc.build_tiny_pipeline(0), tmp_path / "local", fp32_bin=False, fp16_bin=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = Pipeline.from_folder(local, device="cpu", dtype=torch.float32, exact=True)
        expected = np.asarray(pipe.generate(["a red bus"], [1], Settings(steps=100)).images[0].convert("RGB"))
    finally:
        torch.set_num_threads(threads)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert f"{REPO} is not in the cache: downloading 1.6 MB (fp16, 14 files, commit {hub.commits['main'][:7]})" in err
    image = Image.open(tmp_path / "hub.png")
    assert np.array_equal(np.asarray(image.convert("RGB")), expected)
    record = json.loads(image.text["vqgen"])
    assert (record["repo_id"], record["commit"], record["precision"]) == (REPO, hub.commits["main"], "fp16")
    assert_cache_scans_clean(cache)


def test_hf_cache_rm_after_fp32_download_removes_the_model(hub, tmp_path):
    """fp32 download (conversion, pickles dropped), then what `hf cache rm REPO` does: huggingface_hub's
    delete strategy on its own scan. The repo is gone from the cache, vqgen no longer lists or serves
    it, and its conversion outside the cache is deleted on vqgen's next run."""
    from huggingface_hub import scan_cache_dir

    cache = tmp_path / "cache"
    assert run(["download", REPO, "--precision", "fp32", "-q"], cache, hub.url).returncode == 0
    assert run(["download", REPO, "--revision", "v1", "-q"], cache, hub.url).returncode == 0
    assert_cache_scans_clean(cache)
    mine = vqgen_home(cache) / "models--microsoft--vq-diffusion-ithq"
    assert {p.name for p in mine.iterdir()} == {hub.commits["main"], f"fp16-{hub.commits['v1']}.json"}

    # `hf cache rm` of one revision: the other stays usable.
    scan_cache_dir(cache).delete_revisions(hub.commits["v1"]).execute()
    listing = run(["models"], cache, hub.url).stdout
    assert hub.commits["main"][:7] in listing and hub.commits["v1"][:7] not in listing
    assert {p.name for p in mine.iterdir()} == {hub.commits["main"]}

    # ... and of the last one: everything goes, the conversion included.
    info = scan_cache_dir(cache)
    assert [r.repo_id for r in info.repos] == [REPO]
    info.delete_revisions(*(rev.commit_hash for r in info.repos for rev in r.revisions)).execute()
    assert not (cache / "models--microsoft--vq-diffusion-ithq").exists()
    r = run(["models"], cache, hub.url)
    assert r.stdout == "" and "no VQ-Diffusion models" in r.stderr
    assert not mine.exists()
    r = run(["download", REPO, "--precision", "fp32"], cache, hub.url, HF_HUB_OFFLINE="1")
    assert_one_line_error(r, "offline")
    assert_cache_scans_clean(cache)


def test_old_vqgen_folder_inside_the_hub_cache_is_moved_out(hub, tmp_path):
    """vqgen before issue 13 kept its files in <HF_HUB_CACHE>/vqgen/, which huggingface_hub's scan
    reports as a corrupted repo. The first run of a newer vqgen moves them out, and nothing is lost:
    the fp32 conversion and the fp16 manifests are still found, nothing is fetched again."""
    from huggingface_hub import scan_cache_dir

    cache = tmp_path / "cache"
    assert run(["download", REPO, "--precision", "fp32", "-q"], cache, hub.url).returncode == 0
    assert run(["download", REPO, "-q"], cache, hub.url).returncode == 0
    before = files_in(vqgen_home(cache))
    vqgen_home(cache).rename(cache / "vqgen")  # the old layout
    (cache / "vqgen" / "models--microsoft--vq-diffusion-ithq" / ".tmp-leftover-1").mkdir()  # an interrupted conversion
    assert [str(w) for w in scan_cache_dir(cache).warnings] == [f"Repo path is not a valid HuggingFace cache directory: {cache / 'vqgen'}"]

    r = run(["models"], cache, hub.url)
    assert r.returncode == 0 and REPO in r.stdout and "fp16+fp32" in r.stdout, r.stderr
    assert not (cache / "vqgen").exists()
    assert files_in(vqgen_home(cache)) == before
    assert_cache_scans_clean(cache)
    requests = len(hub.requests)
    for precision in ("fp16", "fp32"):
        r = run(["download", REPO, "--precision", precision], cache, hub.url)
        assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr
    assert not [p for _, p, _ in hub.requests[requests:] if "/resolve/" in p]


def test_migration_merges_and_survives_another_filesystem(tmp_path, monkeypatch):
    """Entry by entry: what the new place already has wins, the rest moves; across filesystems
    (EXDEV) each entry is copied under a temporary name and renamed into place."""
    import errno

    import vqgen.cache as hc

    old, root = tmp_path / "cache" / "vqgen", tmp_path / "vqgen"
    a, b, c = "a" * 40, "b" * 40, "c" * 40
    for folder, name, text in [(old, f"fp16-{a}.json", "old a"), (old, f"{b}/model_index.json", "old b"),
                               (old, f"{c}/model_index.json", "old c"), (root, f"{c}/model_index.json", "new c")]:
        path = folder / "models--o--n" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    real_rename = os.rename

    def cross_device(src, dst):
        if Path(src).is_relative_to(old):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)

    monkeypatch.setattr(hc.os, "rename", cross_device)
    hc._migrate(old, root)
    assert not old.exists()
    got = {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}
    assert got == {f"models--o--n/fp16-{a}.json": "old a", f"models--o--n/{b}/model_index.json": "old b",
                   f"models--o--n/{c}/model_index.json": "new c"}


def test_orphans_are_dropped_only_by_the_cache_that_owns_the_folder(tmp_path, monkeypatch):
    """With HF_HOME set, a run with another HF_HUB_CACHE shares $HF_HOME/vqgen: that run must not
    take the first cache's conversions for leftovers of `hf cache rm`."""
    import vqgen.cache as hc

    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    main_cache, root, commit = tmp_path / "home" / "hub", tmp_path / "home" / "vqgen", "d" * 40
    (main_cache / "models--o--n" / "snapshots" / commit).mkdir(parents=True)
    (root / "models--o--n" / commit).mkdir(parents=True)
    hc.tidy(main_cache, root)  # the owner: its snapshot is there, nothing to drop
    other = tmp_path / "other-hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(other))
    assert hc.vqgen_home() == root
    hc.tidy(other, root)
    assert (root / "models--o--n" / commit).is_dir()
    shutil.rmtree(main_cache / "models--o--n")  # `hf cache rm` in the owner cache
    hc.tidy(main_cache, root)
    assert not (root / "models--o--n").exists()


@pytest.mark.parametrize("env, expected", [
    ({}, "xdg/huggingface/vqgen"),
    ({"HF_HOME": "home"}, "home/vqgen"),
    ({"HF_HUB_CACHE": "big/hub"}, "big/vqgen"),
    ({"HF_HOME": "home", "HF_HUB_CACHE": "big/hub"}, "home/vqgen"),
    ({"HF_HOME": "home", "HF_HUB_CACHE": "home"}, "vqgen"),  # never inside the hub cache
])
def test_vqgen_home_is_never_inside_the_hub_cache(tmp_path, monkeypatch, env, expected):
    import vqgen.cache as hc

    for key in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for key, value in env.items():
        monkeypatch.setenv(key, str(tmp_path / value))
    assert hc.vqgen_home() == tmp_path / expected
    assert not hc.vqgen_home().is_relative_to(hc.hub_cache())


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from vqgen.cli import main; main(['--help']); main(['download', '--help']); main(['models', '--help']);"
            "print([m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
