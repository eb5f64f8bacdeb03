"""The local engine's parts that guard this machine: settings, downloads, limits, publishing."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from operator_service.engine import EngineConfig, load_engine_config
from operator_service.engine.disk import sweep_interval
from operator_service.engine.fetch import FetchError, FetchLimits, download
from operator_service.engine.publish import publish
from operator_service.engine.sandbox.containers import container_argv, image_reference, start_container
from operator_service.engine.sandbox.isolation import Isolation, JobSandbox, algorithm_env
from operator_service.engine.sandbox.uids import UidPool
from operator_service.engine.settings import operator_key
from operator_service.engine.workspace import Workspace, create, open_engine_file
from operator_service.env_vars import ConfigError

PAYLOAD = b"x" * 4096


class Body(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/declared":
            self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(http_stub) -> str:
    return http_stub(Body)


def test_settings_use_ocean_engine_names_and_name_the_variable_at_fault(tmp_path):
    config = load_engine_config(
        {
            "nCPU": "2",
            "ramGB": "0.5",
            "maxJobs": "3",
            "maxJobDuration": "90",
            "ENGINE_NAMESPACE": "gpu-env",
            "ENGINE_WORK_DIR": str(tmp_path),
            "ENGINE_MIN_FREE_GB": "2.5",
        }
    )
    assert (config.cpus, config.ram_bytes, config.max_jobs, config.max_job_duration) == (2, 512 * 1024**2, 3, 90)
    assert (config.min_free_gb, load_engine_config({}).min_free_gb) == (2.5, 1.0)
    assert (config.namespace, config.work_dir, config.poll_seconds) == ("gpu-env", tmp_path, 2.0)
    for name, value in (
        ("nCPU", "two"),
        ("maxJobs", "0"),
        ("ENGINE_USE_DOCKER", "maybe"),
        ("OPERATOR_PRIVATE_KEY", "0x1234"),
        ("maxJobs", "1.5"),
        ("ENGINE_MIN_FREE_GB", "-1"),
        ("ENGINE_MIN_FREE_GB", "inf"),
    ):
        with pytest.raises(ConfigError, match=name):
            load_engine_config({name: value})


def test_the_operator_key_is_generated_once_and_kept_private(tmp_path):
    config = load_engine_config({"ENGINE_WORK_DIR": str(tmp_path)})
    first = operator_key(config)
    assert operator_key(config) == first
    (key_file,) = tmp_path.glob(".*key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    given = "0x" + "11" * 32
    assert operator_key(load_engine_config({"ENGINE_WORK_DIR": str(tmp_path), "OPERATOR_PRIVATE_KEY": given})) != first


@pytest.mark.parametrize("path", ["/declared", "/streamed"])
def test_a_download_larger_than_the_limit_fails_and_leaves_nothing(server, tmp_path, path):
    target = tmp_path / "0"
    with pytest.raises(FetchError, match="limit"):
        download(server + path, target, FetchLimits(max_bytes=1000, total_seconds=10), threading.Event())
    assert not target.exists()
    assert download(server + path, target, FetchLimits(len(PAYLOAD), 10), threading.Event()) == len(PAYLOAD)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "/etc/passwd", None])
def test_only_http_urls_are_downloaded(tmp_path, url):
    with pytest.raises(FetchError, match="not an http"):
        download(url, tmp_path / "0", FetchLimits(1000, 10), threading.Event())
    assert not (tmp_path / "0").exists()


def _workspace(tmp_path: Path, owner: int | None = None) -> Workspace:
    workspace = Workspace(tmp_path / "job")
    create(workspace, owner, None)
    return workspace


def _append(path: Path, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


def test_publishing_copies_regular_files_only_never_what_a_link_points_to(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("machine secret")
    secret_dir = tmp_path / "secret-dir"
    secret_dir.mkdir()
    (secret_dir / "inside.txt").write_text("machine secret")
    workspace = _workspace(tmp_path)
    (workspace.outputs / "result.txt").write_text("ok")
    (workspace.outputs / "nested").mkdir()
    (workspace.outputs / "nested" / "part.txt").write_text("ok too")
    (workspace.outputs / "link.txt").symlink_to(secret)
    (workspace.outputs / "linked-dir").symlink_to(secret_dir)
    os.link(secret, workspace.outputs / "hardlink.txt")
    os.mkfifo(workspace.outputs / "pipe")
    workspace.algorithm_log.symlink_to(secret)

    results = tmp_path / "results"
    entries = publish(workspace, results, "job1", 10**6, lambda line: _append(workspace.publish_log, line))
    outputs = [(entry["filename"], entry["filesize"]) for entry in entries if entry["type"] == "output"]
    assert outputs == [("result.txt", 2), ("nested/part.txt", 6)]
    assert [entry["type"] for entry in entries][2:] == ["publishLog"], "the linked algorithm.log is not published"
    assert all(
        entry["url"] == (results / "job1" / "outputs" / entry["filename"]).as_uri()
        for entry in entries
        if entry["type"] == "output"
    )
    published = "".join(path.read_text() for path in results.rglob("*") if path.is_file())
    assert "machine secret" not in published


def test_the_engine_never_writes_through_a_link_planted_in_the_logs_folder(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched")
    workspace = _workspace(tmp_path)
    workspace.algorithm_log.symlink_to(target)
    with pytest.raises(OSError):
        open_engine_file(workspace.algorithm_log, "a")
    assert target.read_text() == "untouched"


@pytest.mark.parametrize(
    "program, error",
    [
        ("x = bytearray(600 * 1024 * 1024)", "MemoryError"),
        ("open('/tmp/big', 'wb').write(b'x' * 2 * 1024 * 1024)", "File too large"),
    ],
)
def test_without_cgroups_or_volumes_each_process_is_limited_instead(program, error):
    """Where the machine offers no cgroups and no volumes, per-process limits stand in for them."""
    folder = Path(tempfile.mkdtemp(prefix="engine-limits-"))  # outside pytest's folder, private to root
    uids = UidPool() if os.geteuid() == 0 else None
    isolation = Isolation(bwrap=None, host_network=False, uids=uids, cgroups=None, volumes=False, docker=False)
    config = load_engine_config({"ramGB": "0.25", "diskGB": "0.001", "ENGINE_WORK_DIR": str(folder)})
    try:
        folder.chmod(0o755)
        workspace = Workspace(folder / "job")
        sandbox = JobSandbox(isolation, config, workspace, "job")
        sandbox.take_uid()
        create(workspace, sandbox.uid, None)
        env = algorithm_env({}, home=sandbox.tmp_path())
        with open_engine_file(workspace.algorithm_log, "a") as log:
            program = program.replace("/tmp", sandbox.tmp_path())
            code = sandbox.start(f'python3 -c "{program}"', env, log, seconds=10).wait(timeout=20)
        sandbox.release()
        output = workspace.algorithm_log.read_text()
    finally:
        shutil.rmtree(folder)
    assert code not in (0, None)
    assert error in output


def test_a_container_runs_like_the_algorithm_pod_locked_down_without_the_secret_on_its_command_line(
    tmp_path, monkeypatch
):
    fake_docker = tmp_path / "docker"
    fake_docker.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD/argv"\nenv > "$RECORD/env"\n')
    fake_docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("RECORD", str(tmp_path))
    workspace = _workspace(tmp_path)
    mounts = [(workspace.inputs, "inputs", True), (workspace.outputs, "outputs", False)]
    reference = image_reference("python", "3.11", "sha256:" + "ab" * 32)
    command = "python3 /data/transformations/algorithm"
    pod_env = {"secret": "job-secret", "OUTPUTS": "/data/outputs"}
    argv = container_argv(
        reference,
        command,
        list(pod_env),
        mounts,
        name="ocean-algo-j1",
        cpus=2,
        ram_bytes=2**30,
        tmp_bytes=2**20,
        max_processes=64,
        uid=1500007,
        host_network=False,
    )
    with open_engine_file(workspace.algorithm_log, "a") as log:
        assert start_container(argv, pod_env, log, "ocean-algo-j1").wait(timeout=10) == 0

    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[-3:] == [f"python@sha256:{'ab' * 32}", "-c", command]
    assert f"{workspace.inputs}:/data/inputs:ro" in argv and f"{workspace.outputs}:/data/outputs" in argv

    def option(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert (option("--network"), option("--cap-drop"), option("--security-opt")) == ("none", "ALL", "no-new-privileges")
    assert (option("--user"), option("--pids-limit")) == ("1500007:1500007", "64")
    assert (option("--cpus"), option("--memory"), option("--memory-swap")) == ("2", str(2**30), str(2**30))
    assert "--read-only" in argv and option("--tmpfs") == f"/tmp:rw,nosuid,nodev,size={2**20}"
    assert "secret" in argv and not any("job-secret" in arg for arg in argv)
    assert "secret=job-secret" in (tmp_path / "env").read_text().splitlines()
    assert image_reference("python", "3.11", "") == "python:3.11"
    assert image_reference("python", "", None) == "python:latest"
    shared = container_argv(
        reference,
        command,
        [],
        [],
        name="n",
        cpus=1,
        ram_bytes=1,
        tmp_bytes=1,
        max_processes=1,
        uid=1000,
        host_network=True,
    )
    assert shared[shared.index("--network") + 1] == "host"


def test_expired_results_are_looked_for_every_tenth_of_storage_expiry_at_least_once_a_minute():
    def interval(expiry: int, poll: float = 2.0) -> float:
        return sweep_interval(EngineConfig(storage_expiry=expiry, poll_seconds=poll))

    assert (interval(100), interval(86400), interval(5), interval(5, poll=0.1)) == (10, 60, 2, 0.5)
