"""The job folder, laid out as Ocean's pods see their /data volume.

    <ENGINE_WORK_DIR>/<jobId>/            VOLUME
        inputs/<did without did:op:>/<n>  the n-th file of each input
        transformations/algorithm         the algorithm
        ddos/                             (empty: the local engine resolves no DDOs)
        outputs/                          written by the algorithm, published
        logs/algorithm.log                the algorithm's output, published
        adminlogs/                        configure.log, publish.log, the algorithm's pid

When the engine runs as root the algorithm runs as an unprivileged user (see sandbox.py):
it owns only outputs/ and logs/, reads inputs/ and transformations/, and cannot enter
adminlogs/ (the pods do not mount it in the algorithm container either). It may traverse
ENGINE_WORK_DIR but not list it, so one job cannot find another by listing.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional

from operator_service.engine.sandbox import AlgorithmUser

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
ALGORITHM_WRITABLE = ("outputs", "logs")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def transformations(self) -> Path:
        return self.root / "transformations"

    @property
    def algorithm(self) -> Path:
        return self.transformations / "algorithm"

    @property
    def ddos(self) -> Path:
        return self.root / "ddos"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def algorithm_log(self) -> Path:
        return self.logs / "algorithm.log"

    @property
    def adminlogs(self) -> Path:
        return self.root / "adminlogs"

    @property
    def configure_log(self) -> Path:
        return self.adminlogs / "configure.log"

    @property
    def publish_log(self) -> Path:
        return self.adminlogs / "publish.log"

    @property
    def pid_file(self) -> Path:
        return self.adminlogs / "algorithm.pid"


def prepare_work_dir(work_dir: Path, user: Optional[AlgorithmUser]) -> None:
    """Create ENGINE_WORK_DIR; the algorithm user may traverse it and its parents, not list it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        work_dir.chmod(0o711)
        for parent in work_dir.parents:
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH)


def workspace_for(work_dir: Path, job_id: str) -> Workspace:
    if not JOB_ID_PATTERN.match(job_id):
        raise ValueError(f"job id {job_id!r} cannot name a folder")
    return Workspace(work_dir / job_id)


def create(workspace: Workspace, user: Optional[AlgorithmUser]) -> None:
    """A fresh, empty job folder (anything left from an earlier attempt is removed)."""
    if workspace.root.exists():
        shutil.rmtree(workspace.root)
    ensure(workspace, user)


def ensure(workspace: Workspace, user: Optional[AlgorithmUser]) -> None:
    """Create whatever part of the job folder is missing, with the permissions above."""
    workspace.root.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in ("inputs", "transformations", "ddos", *ALGORITHM_WRITABLE):
        (workspace.root / name).mkdir(mode=0o755, exist_ok=True)
    workspace.adminlogs.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        for name in ALGORITHM_WRITABLE:
            os.chown(workspace.root / name, user.uid, user.gid, follow_symlinks=False)


def open_engine_file(path: Path, mode: str) -> BinaryIO:
    """Open a file in a folder the algorithm can write to, never following a planted symlink."""
    flags = {"a": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC}[mode]
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return os.fdopen(fd, mode + "b", buffering=0)
