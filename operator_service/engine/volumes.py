"""Each job's disk: a file system of exactly diskGB, like the data volume of Ocean's job pods.

The job's /data (inputs, transformations, ddos, outputs, logs) and its /tmp live on an ext4
file system made for the job in a file of diskGB bytes, reserved on the host disk when the
job starts (fallocate) and mounted through a loop device. When the job has written diskGB,
its next write fails with "No space left on device"; the host disk cannot fill up, because
the space was reserved up front, and a job that cannot get its space fails before it runs.
The volume is deleted with the job's folder.

This needs root (mount) and mkfs.ext4; without them the engine says so at start-up and
limits the size of each file an algorithm writes instead (RLIMIT_FSIZE).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import subprocess
from pathlib import Path

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COMMAND_TIMEOUT = 60
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


class VolumeError(Exception):
    """The job's volume could not be made, mounted or removed."""


def unavailable_reason() -> str | None:
    """None when volumes can be made here; else why not, for the start-up log."""
    if os.geteuid() != 0:
        return "the engine does not run as root (mounting a volume needs root)"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool, path=SYSTEM_PATH) is None:
            return f"{tool} is not installed"
    return None


def create(image: Path, mountpoint: Path, size_bytes: int) -> None:
    """Reserve `size_bytes` in `image`, make an ext4 file system in it and mount it on `mountpoint`."""
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        _reserve(fd, size_bytes)
    finally:
        os.close(fd)
    _run("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "nodiscard,root_owner=0:0", str(image))
    mount(image, mountpoint)


def _reserve(fd: int, size_bytes: int) -> None:
    if _libc.fallocate(fd, 0, 0, size_bytes) == 0:
        return
    code = ctypes.get_errno()
    if code == errno.ENOSPC:
        raise VolumeError(f"the host disk has no room for the job's {size_bytes} bytes")
    if code not in (errno.EOPNOTSUPP, errno.ENOSYS):
        raise VolumeError(f"cannot reserve the job's disk: {os.strerror(code)}")
    os.ftruncate(fd, size_bytes)  # a file system without fallocate: a sparse file


def mount(image: Path, mountpoint: Path) -> None:
    mountpoint.mkdir(mode=0o755, exist_ok=True)
    if not is_mounted(mountpoint):
        _run("mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", str(image), str(mountpoint))
    mountpoint.chmod(0o755)


def unmount(mountpoint: Path) -> None:
    """Unmount (detaching the loop device); lazily if something still holds it open."""
    if not is_mounted(mountpoint):
        return
    try:
        _run("umount", str(mountpoint))
    except VolumeError:
        _run("umount", "--lazy", str(mountpoint))


def is_mounted(path: Path) -> bool:
    return os.path.ismount(path)


def mounts_under(folder: Path) -> list[Path]:
    """Mount points at or under `folder`, deepest first."""
    root = str(folder.resolve())
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point == root or point.startswith(root + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def _run(*argv: str) -> None:
    try:
        subprocess.run(
            argv,
            check=True,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            env={"PATH": SYSTEM_PATH, "LANG": "C"},
        )
    except subprocess.CalledProcessError as exc:
        raise VolumeError(f"{argv[0]} failed: {(exc.stderr or exc.stdout).strip()[:300]}") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VolumeError(f"{argv[0]} failed: {exc}") from None
