"""The `operator-service` command.

operator-service run      embedded Postgres (unless POSTGRES_HOST is set) + schema + API + local engine
operator-service serve    the API alone under gunicorn, on the configured database
operator-service migrate  create or upgrade the schema
operator-service reconcile  settle what a crash left half-way between Postgres and Kubernetes
operator-service engine   the local engine alone
operator-service demo     submit a sample job to a running service and download its result
operator-service sign     sign as the Provider does (for curl and the API docs' "Try it out")
operator-service jobs     list jobs from the database, or show one job and its history

Every way a command fails ends in one line on stderr, never a traceback: exit code 2 for a
wrong argument or setting, 1 for anything else, 130 for Ctrl-C. An error that is a bug of
ours says so in that line and leaves its traceback in a file, for the report.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from operator_service import __version__
from operator_service.command_line import ArgumentParser
from operator_service.config import load_settings
from operator_service.env_vars import ConfigError
from operator_service.logging_setup import load_logging_settings
from operator_service.tools import jobs_command
from operator_service.tools.launcher import DEFAULT_BIND, DEFAULT_DATA_DIR

# Chosen by bench/: see README, "The HTTP server". Each worker's event loop reads every
# request in full before one of its threads serves it, so slow or idle clients hold no
# thread (operator_service/http_worker.py).
DEFAULT_WORKERS = 2
DEFAULT_WORKER_CLASS = "operator_service.api.http_worker.RequestBufferingWorker"
DEFAULT_THREADS = 8
DEFAULT_TIMEOUT = 120
# The Provider's requests have a few headers and a request line of a few hundred bytes.
# gunicorn's own lines in the service's JSON format, with LOG_FORMAT=json.
JSON_LINES_LOGGER = "operator_service.api.gunicorn_logging.JsonLinesLogger"
HTTP_LIMITS = ["--limit-request-line", "4094", "--limit-request-fields", "50", "--limit-request-field_size", "8190"]


def _gunicorn_command(bind: str) -> list[str]:
    json_lines = load_logging_settings().format == "json"
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
        *(["--logger-class", JSON_LINES_LOGGER] if json_lines else []),
        "operator_service.run:app",
    ]


def migrate(args: argparse.Namespace) -> int:
    from operator_service.tools.launcher import migrate_schema

    print(migrate_schema(load_settings().postgres))
    return 0


def run(args: argparse.Namespace) -> int:
    """Everything on one machine: the front door of `make run` (see launcher.py)."""
    from operator_service.tools.launcher import run as launch

    return launch(Path(args.data_dir).resolve(), args.bind, not args.no_engine, _gunicorn_command(args.bind))


def serve(args: argparse.Namespace) -> NoReturn:
    """Check what can be checked, then become gunicorn (signals reach it directly)."""
    from operator_service.metrics.exposition import MULTIPROC_VARIABLE
    from operator_service.tools.launcher import (
        check_bind_free,
        check_cluster,
        check_server_variables,
        prepare_metrics_folder,
    )

    settings = load_settings()
    check_server_variables(args.bind)
    check_bind_free(args.bind)
    check_cluster(settings)
    default_folder = Path(tempfile.gettempdir()) / f"operator-service-metrics-{os.getpid()}"
    os.environ[MULTIPROC_VARIABLE] = str(prepare_metrics_folder(default_folder))
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
    """Print a signature as the Provider makes it: of MESSAGE, or of owner + jobId + a fresh nonce."""
    from operator_service.domain.signatures import provider_message, sign_provider_message

    if (args.message is None) == (args.owner is None):
        return _usage("sign", "give either MESSAGE, or --owner (with --job-id for a job's routes)")
    if args.message is not None and (args.job_id is not None or args.nonce is not None):
        return _usage("sign", "--job-id and --nonce go with --owner, not with MESSAGE")
    source = "--key" if args.key else "PROVIDER_PRIVATE_KEY"
    key = args.key or os.environ.get("PROVIDER_PRIVATE_KEY")
    if not key:
        return _usage("sign", "give the Provider's private key with --key or PROVIDER_PRIVATE_KEY")
    nonce = args.nonce or str(time.time_ns())
    message = args.message if args.message is not None else provider_message(args.owner, args.job_id, nonce)
    try:
        signature = sign_provider_message(key, message)
    except ValueError as exc:
        return _usage("sign", f"{source}: {exc}")
    if args.message is not None:
        print(signature)
        return 0
    print(f"owner: {args.owner}")
    if args.job_id:
        print(f"jobId: {args.job_id}")
    print(f"nonce: {nonce}")
    print(f"providerSignature: {signature}")
    return 0


def _usage(command: str, message: str) -> int:
    print(f"operator-service {command}: {message} (see operator-service {command} --help)", file=sys.stderr)
    return 2


def _add_bind_option(command_parser: argparse.ArgumentParser) -> None:
    """--bind, for the commands that start the API (run, serve)."""
    command_parser.add_argument(
        "--bind",
        metavar="HOST:PORT",
        default=os.environ.get("OPERATOR_BIND") or DEFAULT_BIND,
        help=f"where the API listens: HOST:PORT or unix:PATH (default: OPERATOR_BIND, else {DEFAULT_BIND};"
        " now %(default)s)",
    )


def parser() -> ArgumentParser:
    """The command line of every subcommand but `engine` and `demo`, which parse their own
    (subcommand_parsers has all of them)."""
    top = ArgumentParser(
        prog="operator-service",
        description="The Compute-to-Data operator service: the API the Ocean Provider calls to run compute"
        " jobs, its database schema, its reconciler and a local engine. `operator-service COMMAND --help`"
        " tells more about each command; README.md tells everything.",
    )
    top.add_argument("--version", action="version", version=f"operator-service {__version__}", help="print the version")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_parser = commands.add_parser(
        "run",
        help="embedded Postgres + API + reconciler + local engine: everything on one machine (make run)",
        description="Run everything on one machine: Postgres (embedded unless POSTGRES_HOST is set), the"
        " schema, the API under gunicorn, the reconciler and the local engine, until Ctrl-C.",
    )
    _add_bind_option(run_parser)
    run_parser.add_argument(
        "--data-dir",
        metavar="FOLDER",
        default=os.environ.get("OPERATOR_DATA_DIR") or DEFAULT_DATA_DIR,
        help="the folder of the embedded database, the job folders and the results, locked by one launcher"
        f" at a time (default: OPERATOR_DATA_DIR, else {DEFAULT_DATA_DIR}; now %(default)s)",
    )
    run_parser.add_argument(
        "--no-engine", action="store_true", help="do not start the local engine (default: start it)"
    )
    serve_parser = commands.add_parser(
        "serve",
        help="the API alone, under gunicorn, on the configured database",
        description="Run the API alone under gunicorn (as the image does), on the database POSTGRES_* name.",
    )
    _add_bind_option(serve_parser)
    commands.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        description="Create the schema in the database POSTGRES_* name, or bring an older one up to date.",
    )
    commands.add_parser(
        "reconcile",
        help="settle registrations a crash left half-way, until stopped",
        description="Every RECONCILE_INTERVAL seconds until SIGINT or SIGTERM, settle what a crash left"
        " half-way between Postgres and Kubernetes (only waits when there is no cluster).",
    )
    commands.add_parser("engine", help="the local engine alone", add_help=False)
    commands.add_parser("demo", help="run a sample job against a running service (make demo)", add_help=False)
    sign_parser = commands.add_parser(
        "sign",
        help="sign as the Provider does, for curl and the API docs",
        description="Print a Provider signature for the signed routes: of MESSAGE (owner + jobId + nonce,"
        " written out), or with --owner, of owner + jobId + a fresh nonce, printed with the nonce to paste"
        " beside it.",
    )
    sign_parser.add_argument(
        "message",
        nargs="?",
        metavar="MESSAGE",
        help='the text to sign, e.g. "$OWNER$JOB$NONCE" (default: none; give it or --owner)',
    )
    sign_parser.add_argument("--owner", help="the owner (consumer address) of the request (default: none)")
    sign_parser.add_argument("--job-id", help="the jobId of the request, for the routes about one job (default: none)")
    sign_parser.add_argument("--nonce", help="the nonce to sign with --owner (default: the time in ns)")
    sign_parser.add_argument("--key", help="the Provider's private key, 64 hex digits (default: PROVIDER_PRIVATE_KEY)")
    jobs_command.add_parser(commands)
    return top


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser, `engine` and `demo` included."""
    from operator_service.engine import parser as engine_parser
    from operator_service.tools.demo import parser as demo_parser

    return {**_subcommands(parser()), "engine": engine_parser(), "demo": demo_parser()}


def _subcommands(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (commands,) = (action for action in top._actions if isinstance(action, argparse._SubParsersAction))
    return dict(commands.choices)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("engine", "demo"):
        return _guarded(argv[0], lambda: _delegate(argv[0], argv[1:]))
    top = parser()
    args, unknown = top.parse_known_args(argv)
    if unknown:  # said by the subcommand's parser, so that the line names its --help
        _subcommands(top)[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": run,
        "serve": serve,
        "migrate": migrate,
        "reconcile": reconcile,
        "sign": sign,
        "jobs": jobs_command.jobs,
    }
    return _guarded(args.command, lambda: commands[args.command](args))


def _delegate(command: str, rest: list[str]) -> int:
    if command == "engine":
        from operator_service.engine import main as engine_main

        return engine_main(rest)
    from operator_service.tools.demo import main as demo_main

    return demo_main(rest)


def _guarded(command: str, call: Callable[[], int]) -> int:
    """Run a command; every failure becomes one line on stderr and an exit code."""
    from operator_service.cluster.client import KubernetesUnavailable
    from operator_service.tools.launcher import StartupError

    prefix = f"operator-service {command}:"
    try:
        return call()
    except ConfigError as exc:
        print(f"{prefix} {exc}", file=sys.stderr)
        return 2
    except (StartupError, KubernetesUnavailable) as exc:
        print(f"{prefix} {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{prefix} {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"{prefix} {_report_bug(command, exc)}", file=sys.stderr)
        return 1


def _report_bug(command: str, exc: Exception) -> str:
    """The line for an error we did not foresee; its traceback goes to a file for the bug report."""
    summary = (str(exc).strip().splitlines() or [""])[0][:200]
    described = f"{type(exc).__name__}: {summary}" if summary else type(exc).__name__
    try:
        with tempfile.NamedTemporaryFile(
            "w", prefix=f"operator-service-{command}-", suffix=".txt", delete=False
        ) as report:
            traceback.print_exception(exc, file=report)
    except OSError:
        return f"unexpected error ({described}); this is a bug, please report it"
    return f"unexpected error ({described}); this is a bug: please report it with {report.name}"


if __name__ == "__main__":
    sys.exit(main())
