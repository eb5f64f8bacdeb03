"""`operator-service run`: everything on one machine, with one owner and a supervisor.

Start-up, in this order; any failure is one line naming the cause, and whatever was
already started is stopped again:

1. every setting is checked (nothing is started yet);
2. the data folder is locked (folder_lock.py): a second launcher stops here, naming the
   first one's PID, having touched nothing;
3. the API's address must be free, and with KUBERNETES=on the cluster must answer;
4. the embedded Postgres starts (unless POSTGRES_HOST is set) and the schema is migrated;
5. the API (gunicorn) starts and is announced once it accepts connections; then the
   reconciler (`operator-service reconcile`, which only waits when there is no cluster)
   and the local engine. The API's URL is recorded in the data folder while it runs, so
   that `operator-service demo` finds it (local_service.py).

Every process started here holds the data folder's lock, gets a signal when the launcher
dies (even by SIGKILL), and runs in its own session: Ctrl-C (SIGINT) or SIGTERM reaches
the launcher alone, which stops the API, the reconciler and the engine, then Postgres.

While running, the launcher restarts the embedded Postgres whenever it dies: after 1 s,
then 2, 4, ... up to 30 s while it keeps dying within a minute, each step logged. The
API, the reconciler and the engine reconnect by themselves (the engine keeps its jobs). If
any of them exits, everything is stopped and the launcher exits with its code.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2

from operator_service.config import Settings, load_settings
from operator_service.env_vars import ConfigError, env_int, env_number
from operator_service.logging_setup import JsonFormatter
from operator_service.metrics.exposition import MULTIPROC_VARIABLE, prepare_multiprocess_folder
from operator_service.store.settings import PostgresSettings
from operator_service.tools.folder_lock import FolderBusy, FolderLock
from operator_service.tools.processes import dies_with_parent, interruptible

if TYPE_CHECKING:
    from operator_service.tools.embedded_db import EmbeddedPostgres

DEFAULT_BIND = "127.0.0.1:8050"
DEFAULT_DATA_DIR = ".operator-data"
DEFAULT_EMBEDDED_PORT = 54329
DEFAULT_DATABASE = "operator"
DEFAULT_ADMIN_SECRET = "myAdminSecret"
METRICS_FOLDER = "metrics"  # in the data folder: the API workers' metrics (PROMETHEUS_MULTIPROC_DIR)
API_START_SECONDS = 60.0
CHILD_STOP_SECONDS = 30.0
SUPERVISE_TICK_SECONDS = 0.5
RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
RESTART_STABLE_SECONDS = 60.0
# gunicorn's own worker classes, and the package each needs beyond gunicorn.
WORKER_CLASSES = {"sync": None, "gthread": None, "gevent": "gevent", "eventlet": "eventlet", "tornado": "tornado"}


class StartupError(Exception):
    """Something could not start: the message is the one line to show."""


def run(data_dir: Path, bind: str, with_engine: bool, api_command: list[str]) -> int:
    """The whole of `operator-service run`; its exit code. ConfigError and StartupError
    reach the caller only before anything has been started, or after it was stopped."""
    default_admin = _set_defaults(data_dir)
    settings = load_settings()
    _console.json_lines = settings.logging.format == "json"
    check_server_variables(bind)
    engine_metrics = None
    if with_engine:
        from operator_service.engine.settings import load_engine_config

        engine_metrics = load_engine_config().metrics_bind
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the data folder {data_dir}: {exc.strerror}") from None
    lock = FolderLock(data_dir)
    try:
        lock.acquire(notice=_say)
    except FolderBusy as exc:
        raise StartupError(str(exc)) from None
    if default_admin:
        _say(f"ALLOWED_ADMINS not set: the admin secret is {DEFAULT_ADMIN_SECRET!r} (set ALLOWED_ADMINS to change it)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    launcher = _Launcher(data_dir, bind, with_engine, api_command, lock, engine_metrics)
    try:
        try:
            launcher.start(settings)
        except KeyboardInterrupt:
            _say("interrupted during start-up; stopping", error=True)
            return 130
        return launcher.supervise()
    finally:
        launcher.stop()
        lock.release()


def _set_defaults(data_dir: Path) -> bool:
    """The defaults of a one-machine install; True if the default admin secret is used."""
    os.environ.setdefault("RESULTS_DIR", str(data_dir / "results"))
    os.environ.setdefault("ENGINE_WORK_DIR", str(data_dir / "jobs"))
    if os.environ.get("ALLOWED_ADMINS"):
        return False
    os.environ["ALLOWED_ADMINS"] = f'["{DEFAULT_ADMIN_SECRET}"]'
    return True


def _say(text: str, error: bool = False) -> None:
    """One line for the person (or, with LOG_FORMAT=json, the log shipper) watching the launcher."""
    if _console.json_lines:
        record = logging.makeLogRecord({"name": "operator_service.launcher", "msg": text})
        record.levelname = "ERROR" if error else "INFO"
        text = JsonFormatter().format(record)
    print(text, file=sys.stderr if error else sys.stdout, flush=True)


@dataclass
class _Console:
    json_lines: bool = False  # LOG_FORMAT=json, read by run()


_console = _Console()


@dataclass(frozen=True)
class Bind:
    """Where gunicorn listens: a TCP host and port, or a Unix socket path."""

    host: str = ""
    port: int = 0
    path: str | None = None

    def probe_address(self) -> tuple[str, int]:
        """Where to connect to reach it (a wildcard host is reached through loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return host, self.port


def parse_bind(text: str) -> Bind:
    """OPERATOR_BIND as gunicorn reads it: HOST:PORT, [IPv6]:PORT, HOST (port 8000) or unix:PATH."""
    if text.startswith("unix:"):
        if len(text) > len("unix:"):
            return Bind(path=text[len("unix:") :])
        host, port = "", None
    elif text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = "8000" if rest == "" else rest[1:] if rest.startswith(":") else None
    elif ":" in text:
        host, _, port = text.partition(":")
        port = None if ":" in port else port
    else:
        host, port = text, "8000"
    if not text or port is None or not port.isdigit() or not 1 <= int(port) <= 65535 or "/" in host:
        raise ConfigError(f"OPERATOR_BIND (or --bind) must be HOST:PORT or unix:PATH, got {text!r}")
    return Bind(host=host, port=int(port))


def check_server_variables(bind: str, env: Mapping[str, str] | None = None) -> None:
    """The OPERATOR_* settings of gunicorn, checked like every other setting."""
    env = os.environ if env is None else env
    parse_bind(bind)
    env_int(env, "OPERATOR_WORKERS", 1, minimum=1)
    env_int(env, "OPERATOR_THREADS", 1, minimum=1)
    env_int(env, "OPERATOR_TIMEOUT", 0, minimum=0)
    env_number(env, "OPERATOR_REQUEST_TIMEOUT", 10.0, 0.1)
    worker_class = (env.get("OPERATOR_WORKER_CLASS") or "sync").strip()
    if worker_class in WORKER_CLASSES:
        package = WORKER_CLASSES[worker_class]
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"OPERATOR_WORKER_CLASS={worker_class} needs the {package} package, which is not installed"
            )
    elif not _importable(worker_class):
        raise ConfigError(
            f"OPERATOR_WORKER_CLASS must be one of {', '.join(WORKER_CLASSES)} or the dotted path"
            f" of an importable worker class, got {worker_class!r}"
        )


def _importable(dotted: str) -> bool:
    module, _, name = dotted.rpartition(".")
    try:
        return bool(module) and hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def check_bind_free(bind: str, variable: str = "OPERATOR_BIND") -> None:
    """StartupError if another program already listens where the API (or what `variable` places) is to listen."""
    address = parse_bind(bind)
    if address.path is not None:
        if os.path.exists(address.path) and _accepts(address):
            raise StartupError(f"{variable} {bind}: another program already listens on that socket")
        return
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address.host or None, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    except OSError as exc:
        raise StartupError(
            f"{variable} {bind}: cannot listen there ({exc.strerror or exc}); is another program using it?"
        ) from None


def prepare_metrics_folder(default: Path) -> Path:
    """The API's PROMETHEUS_MULTIPROC_DIR (`default` when unset), created, or emptied of an
    earlier server's files; the workers of one server share it, and only they."""
    folder = Path(os.environ.get(MULTIPROC_VARIABLE) or default)
    try:
        prepare_multiprocess_folder(folder)
    except OSError as exc:
        raise StartupError(f"{MULTIPROC_VARIABLE} {folder}: cannot prepare it ({exc.strerror or exc})") from None
    return folder


def check_cluster(settings: Settings) -> None:
    """With KUBERNETES=on the API refuses to start without a cluster: say so before starting it."""
    if settings.kubernetes != "on":
        return
    from operator_service.cluster.client import KubernetesUnavailable, connect

    try:
        cluster = connect("on")
    except KubernetesUnavailable as exc:
        raise StartupError(str(exc)) from None
    if cluster is not None:
        cluster.close()


def migrate_schema(postgres: PostgresSettings) -> str:
    """Create or upgrade the schema; its report line. StartupError if the database cannot
    be reached or refuses; Ctrl-C interrupts the wait at once."""
    from operator_service.store import migrations
    from operator_service.store.pool import Database, DatabaseUnavailable

    db = Database(postgres, max_connections=1)
    where = f"{postgres.host or 'localhost'}:{postgres.port}/{postgres.database or '(default database)'}"
    try:
        return interruptible(lambda: migrations.upgrade(db)).report()
    except DatabaseUnavailable as exc:
        raise StartupError(f"cannot use the database at {where}: {exc}") from None
    except psycopg2.Error as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StartupError(f"the schema migration on {where} failed: {first_line}") from None
    finally:
        db.close()


@dataclass
class _Child:
    name: str
    process: subprocess.Popen


class _Launcher:
    def __init__(
        self,
        data_dir: Path,
        bind: str,
        with_engine: bool,
        api_command: list[str],
        lock: FolderLock,
        engine_metrics: str | None = None,
    ):
        self.data_dir = data_dir
        self.engine_metrics = engine_metrics  # ENGINE_METRICS_BIND, when the engine serves its metrics
        self.bind = bind
        self.with_engine = with_engine
        self.api_command = api_command
        self.lock = lock
        self.server: EmbeddedPostgres | None = None  # the embedded Postgres, when there is one
        self.children: list[_Child] = []
        self._restarts = _Backoff()

    def start(self, settings: Settings) -> None:
        check_bind_free(self.bind)
        if self.engine_metrics:
            check_bind_free(self.engine_metrics, "ENGINE_METRICS_BIND")
        check_cluster(settings)
        metrics_folder = prepare_metrics_folder(self.data_dir / METRICS_FOLDER)
        if not os.environ.get("POSTGRES_HOST"):
            self._start_database()
        _say(migrate_schema(load_settings().postgres))
        api = self._spawn("the API (gunicorn)", self.api_command, {MULTIPROC_VARIABLE: str(metrics_folder)})
        self._wait_until_listening(api)
        self._spawn("the reconciler", [sys.executable, "-m", "operator_service.tools.cli", "reconcile"])
        if self.with_engine:
            self._spawn("the local engine", [sys.executable, "-m", "operator_service.tools.cli", "engine"])
        from operator_service.tools import local_service  # which imports this module

        local_service.record(self.data_dir, self.bind)
        _say(f"operator-service on http://{self.bind}  (API docs: http://{self.bind}/api/v1/docs/)")
        if self.engine_metrics:
            _say(f"the local engine's metrics on http://{self.engine_metrics}/metrics")

    def _start_database(self) -> None:
        try:
            from operator_service.tools.embedded_db import EmbeddedPostgres, EmbeddedPostgresError, PortInUse
        except ImportError:
            raise StartupError(
                "the embedded Postgres is not installed: pip install 'operator-service[local]',"
                " or set POSTGRES_HOST to use a Postgres server"
            ) from None

        port = env_int(os.environ, "POSTGRES_PORT", DEFAULT_EMBEDDED_PORT, minimum=1)
        if port > 65535:
            raise ConfigError(f"POSTGRES_PORT must be a port number (1-65535), got {port}")
        assert self.lock.fd is not None
        server = self.server = EmbeddedPostgres(self.data_dir / "postgres", port=port, pass_fds=(self.lock.fd,))
        database = os.environ.get("POSTGRES_DB") or DEFAULT_DATABASE
        try:
            server.start()
            interruptible(lambda: server.create_database(database))
        except PortInUse as exc:
            raise StartupError(f"embedded Postgres: {exc}; set POSTGRES_PORT to a free port") from None
        except EmbeddedPostgresError as exc:
            raise StartupError(f"embedded Postgres: {exc}") from None
        except (OSError, subprocess.SubprocessError, psycopg2.Error) as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StartupError(f"embedded Postgres in {server.data_dir}: {first_line}") from None
        os.environ.update(server.env(database))
        _say(
            f"embedded Postgres on 127.0.0.1:{port} (PID {server.pid}), database {database}, data in {server.data_dir}"
        )

    def _spawn(self, name: str, command: list[str], extra_env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """Start a child; `extra_env` is added to its environment only (the API's metrics folder)."""
        assert self.lock.fd is not None
        process = subprocess.Popen(
            command,
            pass_fds=(self.lock.fd,),
            start_new_session=True,
            preexec_fn=dies_with_parent(signal.SIGTERM),
            env={**os.environ, **extra_env} if extra_env else None,
        )
        self.children.append(_Child(name, process))
        return process

    def _wait_until_listening(self, api: subprocess.Popen) -> None:
        address = parse_bind(self.bind)
        deadline = time.monotonic() + API_START_SECONDS
        while not _accepts(address):
            if api.poll() is not None:
                raise StartupError(
                    f"the API (gunicorn) exited at start-up with code {api.returncode}; its own messages are above"
                )
            if time.monotonic() > deadline:
                raise StartupError(f"the API did not listen on {self.bind} within {API_START_SECONDS:g} s")
            time.sleep(0.1)

    def supervise(self) -> int:
        """Until Ctrl-C/SIGTERM (0) or until the API or the engine exits (its code)."""
        try:
            while True:
                for child in self.children:
                    code = child.process.poll()
                    if code is not None:
                        _say(f"{child.name} exited with code {code}; stopping everything", error=True)
                        return code if code > 0 else 1
                if self.server is not None and not self.server.is_running():
                    self._restart_database(self.server)
                time.sleep(SUPERVISE_TICK_SECONDS)
        except KeyboardInterrupt:
            return 0

    def _restart_database(self, server: EmbeddedPostgres) -> None:
        from operator_service.tools.embedded_db import EmbeddedPostgresError

        code = server.exit_code
        how = (
            f"was killed by {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exited with code {code}"
        )
        delay = self._restarts.next_delay()
        _say(f"embedded Postgres {how}; restarting it in {delay:g} s", error=True)
        time.sleep(delay)
        try:
            server.start()
        except (EmbeddedPostgresError, OSError, subprocess.SubprocessError) as exc:
            _say(f"embedded Postgres did not restart: {exc}", error=True)
            return
        _say(f"embedded Postgres restarted (PID {server.pid})", error=True)

    def stop(self) -> None:
        """The API and the engine first (they may still write), then Postgres."""
        from operator_service.tools import local_service  # which imports this module

        local_service.forget(self.data_dir)
        for child in self.children:
            if child.process.poll() is None:
                child.process.terminate()
        for child in self.children:
            try:
                child.process.wait(CHILD_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if self.server is not None:
            self.server.stop()


class _Backoff:
    """1 s, then doubling up to 30 s while restarts come less than a minute apart."""

    def __init__(self) -> None:
        self.delay = RESTART_FIRST_DELAY
        self.last: float | None = None

    def next_delay(self) -> float:
        now = time.monotonic()
        if self.last is None or now - self.last >= RESTART_STABLE_SECONDS:
            self.delay = RESTART_FIRST_DELAY
        else:
            self.delay = min(self.delay * 2, RESTART_MAX_DELAY)
        self.last = now
        return self.delay


def _accepts(address: Bind) -> bool:
    """Something accepts connections at `address`."""
    try:
        if address.path is not None:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(1.0)
                probe.connect(address.path)
        else:
            with socket.create_connection(address.probe_address(), timeout=1.0):
                pass
    except OSError:
        return False
    return True
