"""The publish stage: what pod-publishing does, with RESULTS_DIR in place of S3 or IPFS.

Files are copied to RESULTS_DIR/<jobId>/{outputs,logs,adminlogs}/... and listed, in
pod-publishing's order and shape, as the job's outputsURL entries
`{filename, filesize, url, type}`: every file in outputs (type `output`), then
logs/algorithm.log (`algorithmLog`), adminlogs/configure.log (`configrationLog`, sic) and
adminlogs/publish.log (`publishLog`). Each url is a file:// URL, which getResult streams
only from inside RESULTS_DIR.

The algorithm wrote outputs/ and logs/, and the engine may be root: only regular files
with a single link are copied, opened without following symlinks (os.fwalk and
O_NOFOLLOW), so a planted link cannot publish a file of this machine. At most
MAX_OUTPUT_FILES outputs and diskGB bytes in total are published.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from operator_service.engine.workspace import Workspace

MAX_OUTPUT_FILES = 1000
COPY_CHUNK = 1024 * 1024

Log = Callable[[str], None]


def publish(workspace: Workspace, results_root: Path, job_id: str, max_bytes: int, log: Log) -> list[dict]:
    target = results_root / job_id
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(mode=0o755, parents=True)
    entries = _publish_outputs(workspace.outputs, target / "outputs", max_bytes, log)
    for source, folder, kind in (
        (workspace.algorithm_log, "logs", "algorithmLog"),
        (workspace.configure_log, "adminlogs", "configrationLog"),
    ):
        entry = _publish_file(source, target / folder, kind, log)
        if entry is not None:
            entries.append(entry)
    log(f"Published {len(entries) + 1} files to {target}")
    entry = _publish_file(workspace.publish_log, target / "adminlogs", "publishLog", lambda _: None)
    return entries + ([entry] if entry is not None else [])


def _publish_outputs(source: Path, target: Path, max_bytes: int, log: Log) -> list[dict]:
    entries: list[dict] = []
    total = 0
    for relative, fd in _regular_files(source):
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if len(entries) >= MAX_OUTPUT_FILES or total + size > max_bytes:
                log(f"Skipped outputs/{relative}: more than {MAX_OUTPUT_FILES} files or {max_bytes} bytes")
                continue
            entry = _copy(handle, target / relative, relative, "output")
        total += entry["filesize"]
        entries.append(entry)
        log(f"Published outputs/{relative} ({entry['filesize']} bytes)")
    return entries


def _publish_file(source: Path, target_folder: Path, kind: str, log: Log) -> dict | None:
    fd = _open_regular(str(source))
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        entry = _copy(handle, target_folder / source.name, source.name, kind)
    log(f"Published {source.parent.name}/{source.name} ({entry['filesize']} bytes)")
    return entry


def _copy(handle: BinaryIO, target: Path, filename: str, kind: str) -> dict:
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(handle, out, COPY_CHUNK)
        size = out.tell()
    return {"filename": filename, "filesize": size, "url": target.as_uri(), "type": kind}


def _regular_files(folder: Path) -> Iterator[tuple[str, int]]:
    """(path relative to `folder`, open descriptor) of each regular file, in name order."""
    if not folder.is_dir():
        return
    for dirpath, dirs, files, dirfd in os.fwalk(folder, follow_symlinks=False):
        dirs.sort()
        for name in sorted(files):
            fd = _open_regular(name, dir_fd=dirfd)
            if fd is not None:
                yield os.path.relpath(os.path.join(dirpath, name), folder), fd


def _open_regular(path: str, dir_fd: int | None = None) -> int | None:
    """A read descriptor for a regular, singly linked file; None for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
        return fd
    os.close(fd)
    return None
