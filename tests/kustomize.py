"""kubectl for the manifest tests, and the overlays rendered by its built-in kustomize.

kubectl is taken from PATH or, when missing and running as root, installed from Debian's
`kubernetes-client` package (as bench/ installs wrk). Anywhere else the tests that need it fail
with a message that says what to install: they never skip.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
OVERLAYS = {"local": K8S / "overlays" / "local", "production": K8S / "overlays" / "production"}
# The overlays list the base directory under `resources:`, which kustomize reads from v4 on,
# the version kubectl 1.21 embeds (kubectl 1.20, Debian 12's kubernetes-client, embeds v2).
OLDEST_KUBECTL_MINOR = 21
INSTALL_HINT = (
    "install kubectl 1.21 or newer: Debian's kubectl or kubernetes-client package from Debian 13 on,"
    " or the Kubernetes project's own kubectl package"
)


class KubectlUnusable(RuntimeError):
    """No kubectl that can render k8s/overlays: the message says what to do."""


def check_version(version: dict) -> None:
    """Refuse a kubectl whose kustomize cannot render the overlays (`kubectl version --client -o json`)."""
    kustomize = version.get("kustomizeVersion", "")
    match = re.match(r"v(\d+)\.", kustomize)
    if match and int(match.group(1)) >= 4:
        return
    client = version.get("clientVersion", {})
    minor = int(re.sub(r"\D", "", client.get("minor", "")) or 0)
    if not match and minor >= OLDEST_KUBECTL_MINOR:
        return  # kubectl 1.21 to 1.23 embed kustomize v4 but do not report it
    raise KubectlUnusable(
        f"kubectl {client.get('gitVersion', '(unknown version)')} embeds kustomize "
        f"{kustomize or 'v2'}, which cannot render k8s/overlays (they list ../../base under"
        f" resources:); {INSTALL_HINT}"
    )


def find_kubectl(
    search_path: str | None = None, is_root: bool | None = None, log: Callable[[str], None] = print
) -> str:
    """The path of a kubectl that can render the overlays, installing Debian's if root may."""
    found = shutil.which("kubectl", path=search_path)
    if not found:
        if not (os.geteuid() == 0 if is_root is None else is_root):
            raise KubectlUnusable(
                "kubectl is not installed, and the manifest tests render k8s/overlays with"
                f" `kubectl kustomize`: {INSTALL_HINT} (sudo apt-get install -y kubernetes-client),"
                " then run the tests again"
            )
        log("kubectl is not installed: apt-get update && apt-get install -y kubernetes-client")
        install_debian_kubectl()
        found = shutil.which("kubectl", path=search_path)
        if not found:
            raise KubectlUnusable("apt-get install kubernetes-client succeeded but kubectl is not on PATH")
    answer = subprocess.run([found, "version", "--client", "-o", "json"], capture_output=True, text=True)
    if answer.returncode != 0:
        raise KubectlUnusable(f"{found} version --client failed: {answer.stderr.strip()}")
    check_version(json.loads(answer.stdout))
    return found


def install_debian_kubectl() -> None:
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]  # other test runs may hold the lock
    try:
        subprocess.run([*apt, "update"], check=True, capture_output=True, text=True)
        subprocess.run(
            [*apt, "install", "-y", "kubernetes-client"],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = (getattr(exc, "stderr", None) or str(exc)).strip().splitlines()[-1:]
        raise KubectlUnusable(
            f"kubectl is not installed and apt-get could not install kubernetes-client"
            f" ({' '.join(detail)}); {INSTALL_HINT}"
        ) from None


@functools.cache
def _kubectl_or_problem() -> str | KubectlUnusable:
    try:
        return find_kubectl()
    except KubectlUnusable as exc:
        return exc  # remembered: one attempt to install per test session


def kubectl() -> str:
    found = _kubectl_or_problem()
    if isinstance(found, KubectlUnusable):
        raise found
    return found


def render(directory: Path) -> list[dict]:
    """`kubectl kustomize DIRECTORY`, parsed."""
    answer = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True)
    assert answer.returncode == 0, f"kubectl kustomize {directory} failed:\n{answer.stderr}"
    return [doc for doc in yaml.safe_load_all(answer.stdout) if doc is not None]


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    """The objects an overlay deploys (rendered once per test session)."""
    return tuple(render(OVERLAYS[overlay]))


def secrets_from_script(env: dict | None = None) -> list[dict]:
    """The Secrets `k8s/secrets.sh --dry-run` would create (fresh random values on every call)."""
    path = f"{Path(kubectl()).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    answer = subprocess.run(
        ["sh", str(K8S / "secrets.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {}), "PATH": path},
    )
    assert answer.returncode == 0, f"k8s/secrets.sh --dry-run failed:\n{answer.stderr}"
    return [doc for doc in yaml.safe_load_all(answer.stdout) if doc is not None]
