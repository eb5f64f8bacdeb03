"""Packaging: bumpversion.sh keeps the three version strings in step; the version is the package's."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from operator_service import __version__

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project_copy(tmp_path) -> Path:
    for name in ("bumpversion.sh", "setup.py", ".bumpversion.cfg"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "operator_service").mkdir()
    shutil.copy2(ROOT / "operator_service" / "__init__.py", tmp_path / "operator_service" / "__init__.py")
    return tmp_path


def _versions(root: Path) -> tuple[str, str, str]:
    setup = re.search(r'version="([^"]+)"', (root / "setup.py").read_text()).group(1)
    package = re.search(r'__version__ = "([^"]+)"', (root / "operator_service" / "__init__.py").read_text()).group(1)
    config = re.search(r"current_version = (\S+)", (root / ".bumpversion.cfg").read_text()).group(1)
    return setup, package, config


def test_the_three_versions_agree():
    assert _versions(ROOT) == (__version__,) * 3


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
    assert _versions(project_copy) == (want,) * 3


def test_bumpversion_refuses_an_unknown_part(project_copy):
    result = subprocess.run(["bash", "bumpversion.sh", "huge"], cwd=project_copy, capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
    assert _versions(project_copy) == (__version__,) * 3
