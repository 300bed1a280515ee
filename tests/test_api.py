"""The Python API as a program that embeds vqgen uses it: load a folder, generate in chunks with
callbacks, settings resolved in one place, errors that name the setting (never a CLI flag), not a
byte on stdout or stderr, and no CLI library (typer, rich) needed at all."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import vqgen
from vqgen import settings as vs
from vqgen.errors import CheckpointError, SettingError
from vqgen.events import Events

from hub_fixtures import REPO, hub, ithq_layout  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def pipe(ithq_folder):
    # The ITHQ layout: old-style tokenizer files, whose loading once printed on stdout.
    return vqgen.load(str(ithq_folder), device="cpu", exact=True)


class Recorder(Events):
    def __init__(self):
        self.calls = []

    def steps_started(self, label, total):
        self.calls.append(("started", label, total))

    def step(self, done, total):
        self.calls.append(("step", done, total))

    def steps_finished(self):
        self.calls.append(("finished",))

    def warning(self, text):
        self.calls.append(("warning", text))

    def download_started(self, label, total_bytes):
        self.calls.append(("download", label, total_bytes))

    def download_advanced(self, num_bytes):
        self.calls.append(("bytes", num_bytes))


def pixels(image) -> np.ndarray:
    return np.asarray(image)


def test_chunks_callbacks_and_the_same_images_as_one_by_one(pipe):
    """Five images in chunks of two: three network runs, each reported; every image equals the one
    made alone with its seed (chunking changes no image)."""
    steps, seen_chunks, on_step = 3, [], []
    events = Recorder()
    result = pipe("a red bus", seed=10, num_images=5, steps=steps, chunk_size=2, events=events,
                  on_images=lambda first, chunk: seen_chunks.append((first, len(chunk.images), list(chunk.seeds))),
                  on_step=lambda done, total: on_step.append((done, total)))
    assert len(result.images) == 5 and result.seeds == [10, 11, 12, 13, 14] and result.prompts == ["a red bus"] * 5
    assert seen_chunks == [(0, 2, [10, 11]), (2, 2, [12, 13]), (4, 1, [14])]
    assert on_step == [(i, steps) for i in range(1, steps + 1)] * 3
    assert [c for c in events.calls if c[0] == "started"] == [
        ("started", "images 1-2 of 5", steps), ("started", "images 3-4 of 5", steps), ("started", "images 5-5 of 5", steps)]
    assert events.calls.count(("finished",)) == 3 and sum(c[0] == "step" for c in events.calls) == 3 * steps
    for i in (0, 3, 4):
        alone = pipe("a red bus", seed=10 + i, steps=steps)
        assert np.array_equal(pixels(alone.images[0]), pixels(result.images[i]))


def test_a_seed_and_a_prompt_per_image(pipe):
    result = pipe(["a red bus", "a blue boat"], seed=[7, 3], steps=2, chunk_size=1)
    assert result.seeds == [7, 3] and result.prompts == ["a red bus", "a blue boat"]
    assert np.array_equal(pixels(result.images[1]), pixels(pipe("a blue boat", seed=3, steps=2).images[0]))


def test_warnings_reach_events_once_per_chunk(pipe):
    events = Recorder()
    result = pipe("bus " * 100, seed=1, steps=1, num_images=2, chunk_size=1, events=events)
    assert len(result.warnings) == 1 and result.warnings[0].startswith("prompt longer than")
    assert [c for c in events.calls if c[0] == "warning"] == [("warning", result.warnings[0])] * 2


@pytest.mark.parametrize("kwargs, setting, value, allowed, message", [
    (dict(steps=0), "steps", 0, "at least 1 (the model's chain length at most)", "steps 0 is out of range; use at least 1"),
    (dict(steps=101), "steps", 101, "1..100", "steps 101 is out of range: this model's chain has 100 steps; use 1..100"),
    (dict(guidance=-1.0), "guidance", -1.0, "0 or more (1 turns guidance off, 5 is the default)", "guidance -1.0 is negative; use 0 or more"),
    (dict(truncation=1.5), "truncation", 1.5, "a value in (0, 1], e.g. 0.86 or 1.0", "truncation 1.5 is out of range; use a value in (0, 1]"),
    (dict(schedule="zigzag"), "schedule", "zigzag", "strided, diffusers", "unknown schedule 'zigzag'; use one of strided, diffusers"),
    (dict(num_images=0), "num_images", 0, "at least 1", "num_images 0: the number of images must be at least 1"),
    (dict(seed=[1, 2]), "seed", "list of 2", "one seed per image (1)", "seed: a list of 2; give one seed per image (1)"),
])
def test_errors_name_the_setting_not_a_flag(pipe, kwargs, setting, value, allowed, message):
    with pytest.raises(SettingError) as caught:
        pipe("a cat", **kwargs)
    error = caught.value
    assert (error.setting, error.value, error.allowed) == (setting, value, allowed)
    assert str(error).startswith(message) and "--" not in str(error)


def test_device_and_unknown_settings(ithq_folder):
    with pytest.raises(SettingError) as caught:
        vqgen.load(str(ithq_folder), device="tpu")
    assert caught.value.setting == "device" and "--" not in str(caught.value)
    with pytest.raises(TypeError, match="unknown setting 'stpes'"):
        vqgen.load(str(ithq_folder), device="cpu")("a cat", stpes=3)


def test_a_library_call_prints_nothing(ithq_folder, capfd):
    """Loading (the old tokenizer files included), generating, warnings and errors: not one byte on
    file descriptors 1 or 2."""
    capfd.readouterr()
    p = vqgen.load(str(ithq_folder), device="cpu")
    p("bus " * 100, seed=1, steps=2, num_images=2)
    with pytest.raises(SettingError):
        p("a cat", steps=0)
    assert capfd.readouterr() == ("", "")


def test_settings_precedence_and_sources():
    record = vs.record_layer({"prompt": "a fox", "steps": 7, "guidance": 2.0, "seed": 9, "mode": "fast", "dtype": "bfloat16"})
    resolved = vs.resolve({"guidance": 3.0, "seed": None}, record, {"steps": 25, "truncation": 0.86, "guidance": 1.0})
    assert resolved.settings == vs.Settings(steps=7, guidance=3.0, truncation=0.86)
    assert {k: resolved.sources[k] for k in ("guidance", "steps", "truncation", "schedule", "seed", "prompt", "dtype")} == {
        "guidance": "given", "steps": "image", "truncation": "model", "schedule": "default", "seed": "image",
        "prompt": "image", "dtype": "image"}
    assert resolved["exact"] is False and resolved["quantize"] is None
    # A mode given by the caller replaces the recorded mode and the dtype chosen with it.
    moded = vs.resolve({"exact": True}, record)
    assert moded["exact"] is True and moded["dtype"] is None and moded.sources["dtype"] == "default"
    assert "steps 7 (image)" in resolved.describe()
    with pytest.raises(SettingError, match="steps 30 is out of range: this model's chain has 12 steps; use 1..12"):
        vs.resolve({"steps": 30}, chain=12)


def test_a_model_folder_carries_its_recommended_settings(ithq_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(ithq_folder, folder)
    (folder / "vqgen.json").write_text(json.dumps({"recommended": {"steps": 3, "guidance": 1, "truncation": 0.9}}))
    p = vqgen.load(str(folder), device="cpu")
    assert p.recommended == {"steps": 3, "guidance": 1.0, "truncation": 0.9}
    assert p("a cat", seed=1).settings == vs.Settings(steps=3, guidance=1.0, truncation=0.9)
    assert p("a cat", seed=1, steps=2).settings.steps == 2  # what the caller gives wins
    assert p.resolve(guidance=4.0).sources == {**p.resolve().sources, "guidance": "given"}
    (folder / "vqgen.json").write_text(json.dumps({"recommended": {"steps": 0}}))
    with pytest.raises(CheckpointError, match="vqgen.json: steps 0 is out of range"):
        vs.model_recommended(folder)
    (folder / "vqgen.json").write_text(json.dumps({"recommended": {"stpes": 3}}))
    with pytest.raises(CheckpointError, match="unknown setting 'stpes'"):
        vs.model_recommended(folder)


def test_the_bundled_model_recommends_through_its_folder():
    p = vqgen.load("shapes", device="cpu")
    assert p.recommended == {"steps": 25, "guidance": 1.0, "truncation": 0.86, "schedule": "strided"}
    assert p.resolve().sources["steps"] == "model"


# Run in a fresh interpreter where typer and rich cannot be imported: a program without the CLI's
# libraries must be able to load, download and generate.
BLOCKER = textwrap.dedent("""
    import sys

    # What Python does for a package that is not installed: a None entry makes `import typer`
    # raise ModuleNotFoundError and importlib.util.find_spec("rich") answer None.
    for name in ("typer", "rich"):
        sys.modules[name] = None
""")


def run_without_cli_libraries(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_the_core_imports_and_generates_without_typer_or_rich(ithq_folder):
    done = run_without_cli_libraries(f"""
        try:
            import rich.progress
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker does not block")
        import vqgen, vqgen.pipeline, vqgen.hub, vqgen.batch.runner, vqgen.settings, vqgen.events
        result = vqgen.load({str(ithq_folder)!r}, device="cpu")("a red bus", seed=1, steps=2, num_images=3, chunk_size=2)
        assert len(result.images) == 3
        loaded = sorted(m for m, module in sys.modules.items()
                        if module is not None and (m.split(".")[0] in ("typer", "rich") or m.startswith("vqgen.cli")))
        assert not loaded, loaded
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout, done.stderr) == ("", "")


def test_a_download_without_typer_or_rich_reports_through_events(hub, tmp_path):  # noqa: F811
    """vqgen.load of a repo id that is not in the cache: the download runs, its progress reaches
    the caller's Events, and nothing is printed."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path / "cache"), HF_HUB_DISABLE_TELEMETRY="1")
    done = run_without_cli_libraries(f"""
        import vqgen

        class Count(vqgen.Events):
            started, received, notes = [], 0, []
            def download_started(self, label, total_bytes):
                self.started.append(total_bytes)
            def download_advanced(self, num_bytes):
                Count.received += num_bytes
            def message(self, text):
                self.notes.append(text)

        events = Count()
        pipe = vqgen.load({REPO!r}, device="cpu", events=events)
        assert len(events.started) == 1 and events.received == events.started[0] > 0, (events.started, events.received)
        assert any("downloading" in note for note in events.notes), events.notes
        assert len(pipe("a red bus", seed=1, steps=2).images) == 1
        assert not [m for m, module in sys.modules.items()
                    if module is not None and (m.split(".")[0] in ("typer", "rich") or m.startswith("vqgen.cli"))]
    """, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout, done.stderr) == ("", "")
