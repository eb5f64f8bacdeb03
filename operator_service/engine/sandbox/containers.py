"""The algorithm in a container, where docker is there: the algorithm pod's image and mounts, locked down.

The image is named as Ocean's engine names it (`image@checksum` for a sha256 digest, else
`image:tag`). The container gets the pod's /data mounts (inputs, transformations, ddos
read-only; outputs and logs writable), the pod's environment and the same guarantees as
the local sandbox: no network unless the environment opted in, no capabilities, no
privilege gain, a non-root user (the job's own uid when the engine is root), a read-only
root file system with a private, size-limited /tmp, and limits on memory (no swap beyond
it), CPUs and processes. Values reach the container through the docker client's
environment (`--env NAME`), so the job secret never shows in a process listing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import BinaryIO

CONTAINER_VOLUME = "/data"


class ContainerProcess:
    def __init__(self, popen: subprocess.Popen, name: str):
        self.popen = popen
        self.name = name

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        remove_container(self.name)
        self.popen.wait()


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def image_reference(image: str, tag: object, checksum: object) -> str:
    """As Ocean's engine names the algorithm image: image@checksum if it is a sha256 digest, else image:tag."""
    if isinstance(checksum, str) and checksum.startswith("sha256:"):
        return f"{image}@{checksum}"
    return f"{image}:{tag or 'latest'}"


def container_name(job_id: str) -> str:
    return f"ocean-algo-{job_id}"


def remove_container(name: str) -> None:
    subprocess.run(["docker", "rm", "--force", name], capture_output=True, timeout=60)


def container_argv(
    image: str,
    command: str,
    env_names: list[str],
    mounts: list[tuple[Path, str, bool]],
    *,
    name: str,
    cpus: int,
    ram_bytes: int,
    tmp_bytes: int,
    max_processes: int,
    uid: int,
    host_network: bool,
) -> list[str]:
    """The `docker run` command line for one algorithm (pure: tested on its own); it runs as `uid`."""
    argv = [
        "docker",
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        "host" if host_network else "none",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        f"{uid}:{uid}",
        "--cpus",
        str(cpus),
        "--memory",
        str(ram_bytes),
        "--memory-swap",
        str(ram_bytes),
        "--pids-limit",
        str(max_processes),
        "--read-only",
        "--tmpfs",
        f"/tmp:rw,nosuid,nodev,size={tmp_bytes}",
        "--workdir",
        CONTAINER_VOLUME,
        "--entrypoint",
        "/bin/sh",
    ]
    for source, target, read_only in mounts:
        argv += ["--volume", f"{source}:{CONTAINER_VOLUME}/{target}" + (":ro" if read_only else "")]
    for key in env_names:
        argv += ["--env", key]
    return [*argv, image, "-c", command]


def start_container(argv: list[str], pod_env: dict[str, str], log: BinaryIO, name: str) -> ContainerProcess:
    popen = subprocess.Popen(
        argv, env={**os.environ, **pod_env}, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    return ContainerProcess(popen, name)
