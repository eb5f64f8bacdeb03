"""Running `operator-service` commands as a user would, in a subprocess with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COMMAND_SECONDS = 120


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POSTGRES_", "OPERATOR_", "ENGINE_", "KUBE", "DEMO_", "PROVIDER_"))
    }
    return {**env, "KUBERNETES": "off", "PYTHONUNBUFFERED": "1", **extra}


def command(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "operator_service.tools.cli", *args],
        env=env or clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
    )
