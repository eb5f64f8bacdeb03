"""The embedded Postgres accepts no connection without its password, over TCP or its socket."""
from __future__ import annotations

import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest

from operator_service.embedded_db import POSTGRES_BIN_PATH, EmbeddedPostgres, _open_path_for


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
