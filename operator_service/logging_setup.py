"""Logging from LOG_LEVEL or a LOG_CFG file (YAML or JSON dictConfig), for the service and the engine."""

from __future__ import annotations

import logging
import logging.config
import os
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from operator_service.env_vars import ConfigError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


@dataclass(frozen=True)
class LoggingSettings:
    level: str | None = None
    config_file: str | None = None


def load_logging_settings(env: Mapping[str, str] | None = None) -> LoggingSettings:
    env = os.environ if env is None else env
    raw = env.get("LOG_LEVEL")
    level = raw.strip().upper() if raw else None
    if level is not None and level not in LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {raw!r}")
    path = env.get("LOG_CFG") or None
    if path and not os.path.isfile(path):
        raise ConfigError(f"LOG_CFG names a file that does not exist: {path}")
    return LoggingSettings(level, path)


def setup_logging(settings: LoggingSettings) -> None:
    if settings.config_file:
        with open(settings.config_file) as handle:
            logging.config.dictConfig(yaml.safe_load(handle))
        return
    logging.basicConfig(format=FORMAT, level=settings.level or "INFO")
    if settings.level:
        logging.getLogger().setLevel(settings.level)
