"""Running the untrusted algorithm: a limited subprocess, or a container where docker is there.

The subprocess gets exactly the environment Ocean's algorithm pod gets (DIDS,
TRANSFORMATION_DID, VOLUME, LOGS, INPUTS, OUTPUTS, secret) plus PATH, HOME and LANG, and
nothing of the engine's own environment (no POSTGRES_PASSWORD, no keys). Limits, set in
the child before exec: address space = ramGB (RLIMIT_AS), CPU time = time limit x nCPU
(RLIMIT_CPU), size of any file it writes = diskGB (RLIMIT_FSIZE), no core dumps, and the
first nCPU processors (affinity). The wall-clock limit is enforced by the caller.
When the engine runs as root, the algorithm runs as the unprivileged user `ocean-algo`
(created if missing), with a process limit against fork bombs. It runs in its own
session, so killing its process group kills everything it started (unless a process
escapes with setsid; the container path has no such gap).
"""
from __future__ import annotations

import os
import pwd
import resource
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Protocol

from operator_service.config import ConfigError

ALGORITHM_USER = "ocean-algo"
MAX_PROCESSES = 512
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
CONTAINER_VOLUME = "/data"


@dataclass(frozen=True)
class AlgorithmUser:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Limits:
    cpus: int
    ram_bytes: int
    disk_bytes: int
    seconds: float


class AlgorithmProcess(Protocol):
    def wait(self, timeout: float) -> Optional[int]:
        """The exit code, or None if still running after `timeout` seconds."""

    def kill(self) -> None:
        """Kill the algorithm and everything it started; return when it is gone."""


def algorithm_user() -> Optional[AlgorithmUser]:
    """The unprivileged user to run algorithms as when we are root (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(ALGORITHM_USER)
    except KeyError:
        command = ["useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin",
                   ALGORITHM_USER]
        try:
            subprocess.run(command, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise ConfigError(f"the engine runs as root, so algorithms run as user {ALGORITHM_USER}, which could"
                              f" not be created ({exc}): create it, or run the engine as another user") from None
        entry = pwd.getpwnam(ALGORITHM_USER)
    return AlgorithmUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def algorithm_env(pod_env: dict[str, str], home: str) -> dict[str, str]:
    """The pod's variables plus the bare minimum a program needs; nothing inherited."""
    return {**pod_env, "PATH": SAFE_PATH, "HOME": home, "LANG": "C.UTF-8"}


class _Started:
    def __init__(self, popen: subprocess.Popen):
        self.popen = popen

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


class LocalProcess(_Started):
    def kill(self) -> None:
        kill_group(self.popen.pid)
        self.popen.wait()


def start_local(
    command: str, env: dict[str, str], cwd: Path, log: BinaryIO, limits: Limits, user: Optional[AlgorithmUser]
) -> LocalProcess:
    """Run `sh -c command` with the limits above, its output appended to `log`."""
    as_user = {} if user is None else {"user": user.uid, "group": user.gid, "extra_groups": []}
    popen = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_child_limits(limits, sandboxed=user is not None),
        **as_user,
    )
    return LocalProcess(popen)


def _child_limits(limits: Limits, sandboxed: bool) -> Callable[[], None]:
    """Runs in the child between fork and exec, after the user switch: calls only, no imports."""
    cpu_seconds = int(limits.seconds * limits.cpus) + 1
    processors = sorted(os.sched_getaffinity(0))[: limits.cpus]

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.ram_bytes, limits.ram_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.disk_bytes, limits.disk_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sandboxed:
            resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
        os.sched_setaffinity(0, processors)

    return apply


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def process_start_time(pid: int) -> Optional[str]:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat), to tell a reused pid apart."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]


def kill_leftover(pid_record: str) -> bool:
    """Kill the process group a previous engine recorded as "<pid> <start time>", if still alive."""
    try:
        pid_text, started = pid_record.split()
        pid = int(pid_text)
    except ValueError:
        return False
    if process_start_time(pid) != started:
        return False
    kill_group(pid)
    return True


class ContainerProcess(_Started):
    def __init__(self, popen: subprocess.Popen, name: str):
        super().__init__(popen)
        self.name = name

    def kill(self) -> None:
        remove_container(self.name)
        self.popen.wait()


def image_reference(image: str, tag: object, checksum: object) -> str:
    """As Ocean's engine names the algorithm image: image@checksum if it is a sha256 digest, else image:tag."""
    if isinstance(checksum, str) and checksum.startswith("sha256:"):
        return f"{image}@{checksum}"
    return f"{image}:{tag or 'latest'}"


def container_name(job_id: str) -> str:
    return f"ocean-algo-{job_id}"


def remove_container(name: str) -> None:
    subprocess.run(["docker", "rm", "--force", name], capture_output=True, timeout=60)


def start_container(
    image: str, command: str, pod_env: dict[str, str], mounts: list[tuple[Path, str, bool]],
    log: BinaryIO, limits: Limits, name: str,
) -> ContainerProcess:
    """`docker run` the algorithm image like the algorithm pod: /data mounts, pod env, limits.

    Values reach the container through the docker client's environment (`--env NAME`), so
    the job secret never shows in a process listing.
    """
    argv = ["docker", "run", "--rm", "--name", name, "--cpus", str(limits.cpus),
            "--memory", str(limits.ram_bytes), "--pids-limit", str(MAX_PROCESSES),
            "--security-opt", "no-new-privileges", "--entrypoint", "/bin/sh"]
    for source, target, read_only in mounts:
        argv += ["--volume", f"{source}:{CONTAINER_VOLUME}/{target}" + (":ro" if read_only else "")]
    for key in pod_env:
        argv += ["--env", key]
    argv += [image, "-c", command]
    popen = subprocess.Popen(argv, env={**os.environ, **pod_env},
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return ContainerProcess(popen, name)
