"""The job folder: the job's volume, laid out as Ocean's pods see /data, and the engine's own logs.

    <ENGINE_WORK_DIR>/<jobId>/            the job's uid may traverse it, nobody else
        volume.img                        the job's disk: diskGB reserved up front (volumes.py)
        data/                             the volume, mounted; the algorithm's /data
            inputs/<did without did:op:>/<n>   the n-th file of each input      read-only for the job
            transformations/algorithm          the algorithm                    read-only for the job
            ddos/                              the inputs' DDOs                 read-only for the job
            outputs/                           written by the algorithm, published
            logs/algorithm.log                 the algorithm's output (written by the engine), published
            tmp/                               the algorithm's /tmp
        adminlogs/                        configure.log, publish.log: the engine's alone, never
                                          visible to the algorithm (as the pods do not mount it)

Where volumes cannot be made (the engine is not root), data/ is a plain folder. Every
folder an algorithm may write to is owned by the job's uid; everything else by the engine.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from operator_service.engine import volumes

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
READ_ONLY = ("inputs", "transformations", "ddos")
ALGORITHM_WRITABLE = ("outputs", "logs", "tmp")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def volume_image(self) -> Path:
        return self.root / "volume.img"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def inputs(self) -> Path:
        return self.data / "inputs"

    @property
    def transformations(self) -> Path:
        return self.data / "transformations"

    @property
    def algorithm(self) -> Path:
        return self.transformations / "algorithm"

    @property
    def ddos(self) -> Path:
        return self.data / "ddos"

    @property
    def outputs(self) -> Path:
        return self.data / "outputs"

    @property
    def logs(self) -> Path:
        return self.data / "logs"

    @property
    def tmp(self) -> Path:
        return self.data / "tmp"

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


def prepare_work_dir(work_dir: Path, open_to_job_users: bool) -> None:
    """Create ENGINE_WORK_DIR. Jobs' own users start their sandbox from its folders, so they
    may traverse it and its parents (never list them) when `open_to_job_users`."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if open_to_job_users:
        work_dir.chmod(0o711)
        for parent in work_dir.parents:
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH)


def workspace_for(work_dir: Path, job_id: str) -> Workspace:
    if not JOB_ID_PATTERN.match(job_id):
        raise ValueError(f"job id {job_id!r} cannot name a folder")
    return Workspace(work_dir / job_id)


def create(workspace: Workspace, owner: int | None, volume_bytes: int | None) -> None:
    """A fresh job folder (anything left from an earlier attempt is removed), owned by `owner`'s
    group where the algorithm may go; with its own volume of `volume_bytes` when given."""
    remove(workspace)
    workspace.root.mkdir(mode=0o700, parents=True)
    if owner is not None:
        os.chown(workspace.root, 0, owner)
        workspace.root.chmod(0o710)
    workspace.adminlogs.mkdir(mode=0o700)
    if volume_bytes is not None:
        volumes.create(workspace.volume_image, workspace.data, volume_bytes)
    else:
        workspace.data.mkdir(mode=0o755)
    for name in READ_ONLY:
        (workspace.data / name).mkdir(mode=0o755)
    for name in ALGORITHM_WRITABLE:
        folder = workspace.data / name
        folder.mkdir(mode=0o700)
        if owner is not None:
            os.chown(folder, owner, owner, follow_symlinks=False)


def reopen(workspace: Workspace) -> None:
    """Mount the volume of a job an earlier engine left (to publish what it holds)."""
    workspace.adminlogs.mkdir(mode=0o700, parents=True, exist_ok=True)
    if workspace.volume_image.is_file():
        volumes.mount(workspace.volume_image, workspace.data)
    workspace.logs.mkdir(parents=True, exist_ok=True)


def close(workspace: Workspace) -> None:
    """Unmount the job's volume; the folder and the volume's file stay."""
    for mountpoint in volumes.mounts_under(workspace.root):
        volumes.unmount(mountpoint)


def remove(workspace: Workspace) -> None:
    """Unmount and delete the job folder, volume included."""
    if not workspace.root.exists():
        return
    close(workspace)
    shutil.rmtree(workspace.root)


def open_engine_file(path: Path, mode: str) -> BinaryIO:
    """Open a file in a folder the algorithm can write to, never following a planted symlink."""
    flags = {"a": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC}[mode]
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return cast(BinaryIO, os.fdopen(fd, mode + "b", buffering=0))
