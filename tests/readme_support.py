"""What the README tests share: the README's marked shell blocks, git, and a fresh copy of the checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_steps(kind: str, name: str) -> str:
    """The shell block the README marks `<!-- KIND-steps: NAME -->`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(rf"<!-- {kind}-steps: {name} -->\n```sh\n(.*?)```", readme, re.DOTALL)
    assert len(blocks) == 1, f"README.md should mark one block {kind}-steps: {name}"
    return blocks[0]


def git(checkout: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(["git", *args], cwd=checkout, env=env, check=True, capture_output=True, text=True).stdout


def copy_checkout(copy: Path) -> Path:
    """What a clone of this working tree would hold, in `copy`: tracked files and new ones not ignored."""
    files = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    git(copy, "init", "-q")
    git(copy, "add", "-A")
    git(copy, "commit", "-q", "-m", "copy")
    return copy
