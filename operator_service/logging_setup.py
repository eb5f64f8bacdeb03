"""Logging from LOG_LEVEL or a LOG_CFG file (YAML or JSON dictConfig)."""
from __future__ import annotations

import logging
import logging.config

import yaml

from operator_service.config import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(settings: Settings) -> None:
    if settings.log_cfg:
        with open(settings.log_cfg) as handle:
            logging.config.dictConfig(yaml.safe_load(handle))
        return
    logging.basicConfig(format=FORMAT, level=settings.log_level or "INFO")
    if settings.log_level:
        logging.getLogger().setLevel(settings.log_level)
