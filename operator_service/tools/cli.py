"""The `operator-service` command.

operator-service run      embedded Postgres (unless POSTGRES_HOST is set) + schema + API + local engine
operator-service serve    the API alone under gunicorn, on the configured database
operator-service migrate  create or upgrade the schema
operator-service reconcile  settle what a crash left half-way between Postgres and Kubernetes
operator-service engine   the local engine alone
operator-service demo     submit a sample job to a running service and download its result
operator-service sign     sign a message as the Provider does (for curl examples)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from operator_service.config import load_settings
from operator_service.env_vars import ConfigError

DEFAULT_DATA_DIR = ".operator-data"
DEFAULT_BIND = "127.0.0.1:8050"
# Chosen by bench/: see README, "The HTTP server". Each worker's event loop reads every
# request in full before one of its threads serves it, so slow or idle clients hold no
# thread (operator_service/http_worker.py).
DEFAULT_WORKERS = 2
DEFAULT_WORKER_CLASS = "operator_service.api.http_worker.RequestBufferingWorker"
DEFAULT_THREADS = 8
DEFAULT_TIMEOUT = 120
# The Provider's requests have a few headers and a request line of a few hundred bytes.
HTTP_LIMITS = ["--limit-request-line", "4094", "--limit-request-fields", "50", "--limit-request-field_size", "8190"]


def _gunicorn_command(bind: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--no-control-socket",
        "--bind",
        bind,
        "--workers",
        os.environ.get("OPERATOR_WORKERS", str(DEFAULT_WORKERS)),
        "--worker-class",
        os.environ.get("OPERATOR_WORKER_CLASS", DEFAULT_WORKER_CLASS),
        "--threads",
        os.environ.get("OPERATOR_THREADS", str(DEFAULT_THREADS)),
        "--timeout",
        os.environ.get("OPERATOR_TIMEOUT", str(DEFAULT_TIMEOUT)),
        *HTTP_LIMITS,
        "operator_service.run:app",
    ]


def migrate() -> None:
    from operator_service.tools.launcher import migrate_schema

    print(migrate_schema(load_settings().postgres))


def run(args: argparse.Namespace) -> int:
    """Everything on one machine: the front door of `make run` (see launcher.py)."""
    from operator_service.tools.launcher import run as launch

    return launch(Path(args.data_dir).resolve(), args.bind, not args.no_engine, _gunicorn_command(args.bind))


def serve(args: argparse.Namespace) -> NoReturn:
    """Check what can be checked, then become gunicorn (signals reach it directly)."""
    from operator_service.tools.launcher import check_bind_free, check_cluster, check_server_variables

    settings = load_settings()
    check_server_variables(args.bind)
    check_bind_free(args.bind)
    check_cluster(settings)
    command = _gunicorn_command(args.bind)
    os.execv(command[0], command)


def reconcile(args: argparse.Namespace) -> int:
    """The reconciler, until SIGINT or SIGTERM (domain/reconciler.py)."""
    from operator_service.cluster.client import connect
    from operator_service.domain.reconciler import run_reconciler
    from operator_service.logging_setup import setup_logging
    from operator_service.store.pool import Database

    settings = load_settings()
    setup_logging(settings.logging)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    db = Database(settings.postgres, max_connections=1)
    try:
        run_reconciler(db, connect(settings.kubernetes), settings, stop)
    finally:
        db.close()
    return 0


def sign(args: argparse.Namespace) -> int:
    from operator_service.domain.signatures import sign_provider_message

    key = args.key or os.environ.get("PROVIDER_PRIVATE_KEY")
    if not key:
        print("give the Provider's private key with --key or PROVIDER_PRIVATE_KEY", file=sys.stderr)
        return 2
    print(sign_provider_message(key, args.message))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="operator-service", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="embedded Postgres + API + local engine")
    run_parser.add_argument("--bind", default=os.environ.get("OPERATOR_BIND", DEFAULT_BIND))
    run_parser.add_argument("--data-dir", default=os.environ.get("OPERATOR_DATA_DIR", DEFAULT_DATA_DIR))
    run_parser.add_argument("--no-engine", action="store_true", help="do not start the local engine")
    serve_parser = commands.add_parser("serve", help="the API alone, under gunicorn")
    serve_parser.add_argument("--bind", default=os.environ.get("OPERATOR_BIND", DEFAULT_BIND))
    commands.add_parser("migrate", help="create or upgrade the database schema")
    commands.add_parser("reconcile", help="settle registrations a crash left half-way, until stopped")
    commands.add_parser("engine", help="the local engine alone", add_help=False)
    commands.add_parser("demo", help="run a sample job against a running service", add_help=False)
    sign_parser = commands.add_parser("sign", help="sign a message as the Provider does")
    sign_parser.add_argument("message")
    sign_parser.add_argument("--key", help="the Provider's private key (hex); default PROVIDER_PRIVATE_KEY")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("engine", "demo"):
        return _delegate(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    from operator_service.cluster.client import KubernetesUnavailable
    from operator_service.tools.launcher import StartupError

    try:
        if args.command == "migrate":
            migrate()
            return 0
        return {"run": run, "serve": serve, "reconcile": reconcile, "sign": sign}[args.command](args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except (StartupError, KubernetesUnavailable) as exc:
        print(f"operator-service {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _delegate(command: str, rest: list[str]) -> int:
    try:
        if command == "engine":
            from operator_service.engine import main as engine_main

            return engine_main(rest)
        from operator_service.tools.demo import main as demo_main

        return demo_main(rest)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
