"""The local engine: runs compute jobs on this machine through Ocean's database contract.

`operator-service engine` runs it until SIGINT or SIGTERM; tests call `run_engine` in a
thread. How it works and every setting: README.md, "The local engine".
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence

from operator_service.command_line import ArgumentParser
from operator_service.engine.lease import LeaseLost
from operator_service.engine.runner import run_engine
from operator_service.engine.settings import EngineConfig, load_engine_config
from operator_service.env_vars import ConfigError
from operator_service.logging_setup import load_logging_settings, setup_logging
from operator_service.store.pool import DatabaseUnavailable
from operator_service.store.settings import load_postgres_settings

__all__ = ["EngineConfig", "load_engine_config", "main", "parser", "run_engine"]


def parser() -> ArgumentParser:
    """`operator-service engine` takes no options: environment variables configure it."""
    return ArgumentParser(
        prog="operator-service engine",
        description="Run the local compute engine until SIGINT or SIGTERM. It is configured by"
        " environment variables (ENGINE_NAMESPACE, maxJobs, ramGB, ... and POSTGRES_*): see README.md,"
        " section 'The local engine'.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the engine with its settings from the environment: POSTGRES_*, LOG_LEVEL / LOG_CFG and its
    own (engine/settings.py). It reads none of the service's settings."""
    parser().parse_args(argv)
    try:
        postgres = load_postgres_settings()
        logging_settings = load_logging_settings()
        engine_config = load_engine_config()
    except ConfigError as exc:
        print(f"operator-service engine: {exc}", file=sys.stderr)
        return 2
    setup_logging(logging_settings)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        run_engine(postgres, engine_config, stop)
    except ConfigError as exc:
        print(f"operator-service engine: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:
        print(f"operator-service engine: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    except LeaseLost as exc:
        print(f"operator-service engine: {exc}", file=sys.stderr)
        return 1
    return 0
