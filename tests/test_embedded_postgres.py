"""The embedded Postgres: no connection without its password (TCP or socket), durable commits,
and one owner: it never adopts, stops or outlives what is not its own."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from operator_service.tools.embedded_db import (
    POSTGRES_BIN_PATH,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    PortInUse,
    _open_path_for,
    free_port,
)
from tests.waiting import wait_for


@pytest.fixture
def data_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="operator-embedded-"))
    yield folder / "data"
    shutil.rmtree(folder, ignore_errors=True)


def _connect(**kwargs):
    return psycopg2.connect(connect_timeout=5, **kwargs)


def _refused_without_password(server: EmbeddedPostgres) -> None:
    for host in ("127.0.0.1", str(server.socket_dir)):
        for password in ("", "wrong"):
            with pytest.raises(psycopg2.OperationalError, match="password"):
                _connect(host=host, port=server.port, user="postgres", password=password, dbname="postgres")


def test_no_connection_without_the_generated_password(data_dir):
    server = EmbeddedPostgres(data_dir).start()
    try:
        _refused_without_password(server)
        for host in ("127.0.0.1", str(server.socket_dir)):
            conn = _connect(host=host, port=server.port, user="postgres", password=server.password, dbname="postgres")
            conn.close()
        mode = server.password_file.stat().st_mode
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700, "the socket's folder is private"
        assert len(server.password) >= 32
        assert server.env()["POSTGRES_PASSWORD"] == server.password
    finally:
        server.stop()


def test_a_cluster_that_trusted_local_connections_gets_a_password(data_dir):
    """Clusters made by earlier versions (initdb --auth=trust) are closed at their next start."""
    data_dir.mkdir(mode=0o700, parents=True)
    server = EmbeddedPostgres(data_dir)
    if server.user:
        _open_path_for(server.user, data_dir)
    command = [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(data_dir), "--auth=trust", "-U", "postgres"]
    subprocess.run(command, check=True, capture_output=True, user=server.user)
    assert not server.password_file.exists()

    server.start()
    try:
        _refused_without_password(server)
        conn = _connect(**server.dsn_kwargs())
        conn.close()
    finally:
        server.stop()


def _show(server: EmbeddedPostgres, *names: str) -> dict[str, str]:
    conn = _connect(**server.dsn_kwargs())
    try:
        with conn.cursor() as cur:
            values = {}
            for name in names:
                cur.execute(f"SHOW {name}")
                values[name] = cur.fetchone()[0]
            return values
    finally:
        conn.close()


DURABILITY = ("fsync", "synchronous_commit", "full_page_writes")


def test_the_server_flushes_every_commit_by_default(data_dir):
    server = EmbeddedPostgres(data_dir).start()
    try:
        assert _show(server, *DURABILITY) == dict.fromkeys(DURABILITY, "on")
    finally:
        server.stop()


def test_a_data_folder_of_an_older_version_becomes_durable_at_its_next_start(data_dir):
    """Older versions appended fsync/synchronous_commit/full_page_writes = off at initdb."""
    server = EmbeddedPostgres(data_dir).start()
    server.stop()
    with open(data_dir / "postgresql.conf", "a") as conf:
        conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")

    server.start()
    try:
        assert _show(server, *DURABILITY) == dict.fromkeys(DURABILITY, "on")
        lines = {line.strip() for line in (data_dir / "postgresql.conf").read_text().splitlines()}
        assert not lines & {f"{name} = off" for name in DURABILITY}
    finally:
        server.stop()


def test_a_server_it_did_not_start_is_never_adopted_never_stopped(data_dir):
    first = EmbeddedPostgres(data_dir).start()
    try:
        same_port = EmbeddedPostgres(data_dir.parent / "other", port=first.port)
        with pytest.raises(PortInUse, match=str(first.port)):
            same_port.start()
        same_folder = EmbeddedPostgres(data_dir, port=free_port())
        with pytest.raises(EmbeddedPostgresError, match=f"PID {first.pid}"):
            same_folder.start()
        for other in (same_port, same_folder):
            assert not other.is_running()
            other.stop()
        _connect(**first.dsn_kwargs()).close()
        assert first.is_running()
    finally:
        first.stop()
    assert not (data_dir / "postmaster.pid").exists()


def test_a_port_held_by_a_program_that_never_answers_is_refused_at_once(data_dir):
    """It used to be taken for a running server, and the first connection hung for ever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        server = EmbeddedPostgres(data_dir, port=silent.getsockname()[1])
        refused = threading.Event()

        def start() -> None:
            with pytest.raises(PortInUse):
                server.start()
            refused.set()

        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        thread.join(60)
        assert refused.is_set(), "start() did not refuse the port within 60 s"
        assert not server.is_running()


OWNER_SCRIPT = """
import sys, time
from operator_service.tools.embedded_db import EmbeddedPostgres
from tests.waiting import wait_for
server = EmbeddedPostgres(sys.argv[1]).start()
print(server.pid, flush=True)
time.sleep(600)
"""


def test_the_server_never_outlives_the_process_that_started_it(data_dir):
    with subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(data_dir)], stdout=subprocess.PIPE, text=True
    ) as owner:
        try:
            postmaster = int(owner.stdout.readline())
            assert _alive(postmaster)
        finally:
            owner.kill()
    wait_for(lambda: not _alive(postmaster), "the postmaster to end with its owner, killed with SIGKILL", 60)


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
