"""The distribution: the LICENSE the design names is at the top level and ships in sdist and wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_file_is_mit_and_declared():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the vqgen authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text
    project = _pyproject()["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]


def test_sdist_and_wheel_ship_the_license(tmp_path):
    """Build both with setuptools' PEP 517 hooks, from a copy of the sources (a build in the
    checkout would leave build/ and *.egg-info behind)."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} predates license-files (77)")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "vqgen", src / "vqgen", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    # The folder is read before the hooks run: they rewrite sys.argv.
    code = ("import sys; from setuptools import build_meta as b; out = sys.argv[1]; "
            "names = [b.build_sdist(out), b.build_wheel(out)]; print('built', *names)")
    r = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    # setuptools logs to stdout too: the names are on the last line.
    _, sdist_name, wheel_name = r.stdout.splitlines()[-1].split()
    license_text = (ROOT / "LICENSE").read_bytes()

    with zipfile.ZipFile(out / wheel_name) as whl:
        assert whl.read("vqgen-0.1.0.dist-info/licenses/LICENSE") == license_text
        metadata = whl.read("vqgen-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()

    with tarfile.open(out / sdist_name) as sdist:
        assert sdist.extractfile("vqgen-0.1.0/LICENSE").read() == license_text
        pkg_info = sdist.extractfile("vqgen-0.1.0/PKG-INFO").read().decode()
    assert "License-File: LICENSE" in pkg_info.splitlines()
