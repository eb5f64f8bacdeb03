"""The README's Kubernetes deploy steps, run as written, twice, in a fresh copy of the checkout.

No Docker daemon and no cluster are reachable offline, so docker, kind, minikube and kubectl are
the stand-ins of tests/cluster_standins.py: they keep the images and objects a daemon and a
cluster would hold, render with the real `kubectl kustomize`, and refuse a rollout whose pods
could not start. What is checked is what a new operator meets: the image the cluster runs is
the one built from this checkout (never Ocean's original), every step can be run again without
changing anything, and nothing is written into the checkout that the steps do not announce.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kustomize import KubectlUnusable, kubectl
from tests.readme_support import copy_checkout, git, readme_steps

STANDINS = Path(__file__).resolve().parent / "cluster_standins.py"
# Images a cluster pulls from public registries: Ocean's engine and the trial database's.
PUBLIC_REPOSITORIES = ("oceanprotocol/operator-engine", "postgres")
SERVICE = "Deployment/ocean-operator/operator-service"
DATABASE_PASSWORD = "the database user's password"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """What a clone of this working tree would hold: tracked files and new ones not ignored."""
    return copy_checkout(tmp_path / "operator-service")


@pytest.fixture
def tools(tmp_path: Path) -> dict[str, str]:
    """The environment the steps run in: the stand-ins first on PATH, and their state file."""
    try:
        real_kubectl = kubectl()
    except KubectlUnusable as exc:
        pytest.fail(str(exc), pytrace=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "kind", "minikube", "kubectl"):
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDINS}" {tool} "$@"\n')
        wrapper.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STANDIN_STATE": str(tmp_path / "cluster.json"),
        "REAL_KUBECTL": real_kubectl,
        "STANDIN_PUBLIC_REPOSITORIES": ",".join(PUBLIC_REPOSITORIES),
    }


def run_steps(steps: str, checkout: Path, env: dict[str, str], stdin: str = "") -> dict:
    """Run the block as a shell would with errors stopping it; the stand-ins' state after it."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", steps],
        cwd=checkout,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"the README's steps failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(Path(env["STANDIN_STATE"]).read_text())


def service_images(state: dict) -> set[str]:
    pod = state["objects"][SERVICE]["spec"]["template"]["spec"]
    return {container["image"] for container in pod["initContainers"] + pod["containers"]}


def commands(state: dict) -> list[str]:
    return [" ".join(call) for call in state["log"]]


def secret(state: dict, namespace: str, name: str) -> dict:
    return state["objects"][f"Secret/{namespace}/{name}"]["data"]


def in_order(log: list[str], *steps: str) -> bool:
    positions = [next((i for i, call in enumerate(log) if call.startswith(step)), -1) for step in steps]
    return -1 not in positions and positions == sorted(positions)


def test_the_trial_steps_deploy_the_image_built_here_and_can_be_run_again(checkout, tools) -> None:
    steps = readme_steps("kubernetes", "trial")
    first = run_steps(steps, checkout, tools)
    (image,) = first["built"]
    assert first["built"][image] == str(checkout)  # from the Dockerfile at the top of the checkout
    assert first["loaded"] == [image] and first["pushed"] == []
    assert service_images(first) == {image}
    assert not image.startswith("oceanprotocol/")
    assert in_order(
        commands(first),
        "docker build",
        "kind load",
        "kubectl apply -f",
        "kubectl -n ocean-operator get",
        "kubectl -n ocean-operator create",
        "kubectl apply -k",
        "kubectl -n ocean-operator rollout",
    )
    assert "Deployment/ocean-operator/postgres" in first["objects"]
    assert git(checkout, "status", "--porcelain") == ""  # nothing written into the checkout

    second = run_steps(steps, checkout, tools)
    assert second["objects"] == first["objects"]  # the same objects, the same Secrets
    assert git(checkout, "status", "--porcelain") == ""


def test_the_production_steps_push_set_and_deploy_the_image_and_can_be_run_again(checkout, tools) -> None:
    steps = readme_steps("kubernetes", "production")
    commit = git(checkout, "rev-parse", "--short", "HEAD").strip()
    first = run_steps(steps, checkout, tools, stdin=DATABASE_PASSWORD + "\n")
    image = f"registry.example.com/team/operator-service:{commit}"
    assert list(first["built"]) == [image] and first["pushed"] == [image] and first["loaded"] == []
    assert service_images(first) == {image}
    for namespace, name in (
        ("ocean-operator", "operator-service-secrets"),
        ("ocean-compute", "operator-engine-secrets"),
    ):
        password = secret(first, namespace, name)["POSTGRES_PASSWORD"]
        assert base64.b64decode(password).decode() == DATABASE_PASSWORD
    assert not any(
        key.startswith(("Deployment/ocean-operator/postgres", "PersistentVolumeClaim/")) for key in first["objects"]
    )
    # the one file the steps say they change: the image is set there
    assert git(checkout, "status", "--porcelain").splitlines() == [" M k8s/base/kustomization.yaml"]
    assert image.rsplit(":", 1)[0] in (checkout / "k8s" / "base" / "kustomization.yaml").read_text()

    second = run_steps(steps, checkout, tools, stdin="another password\n")
    assert second["objects"] == first["objects"]  # existing Secrets are kept
    assert git(checkout, "status", "--porcelain").splitlines() == [" M k8s/base/kustomization.yaml"]


def test_a_rollout_of_an_image_never_loaded_or_pushed_fails(checkout, tools) -> None:
    """The check above can fail: without `kind load` the cluster could not run the image."""
    steps = readme_steps("kubernetes", "trial")
    without_load = "\n".join(line for line in steps.splitlines() if not line.startswith("kind load"))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", without_load],
        cwd=checkout,
        env=tools,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "ErrImagePull: operator-service:local is neither loaded, pushed nor public" in result.stderr


def test_a_rollout_without_the_secrets_fails(checkout, tools) -> None:
    steps = readme_steps("kubernetes", "trial")
    without_secrets = "\n".join(line for line in steps.splitlines() if not line.startswith("k8s/secrets.sh"))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", without_secrets],
        cwd=checkout,
        env=tools,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "CreateContainerConfigError: secret operator-service-secrets" in result.stderr
