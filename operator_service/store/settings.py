"""Where the database is: the POSTGRES_* variables, shared by the service, the engine and the tools."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from operator_service.env_vars import env_int, env_number


@dataclass(frozen=True)
class PostgresSettings:
    host: str | None
    port: int
    user: str | None
    password: str | None = field(repr=False)
    database: str | None
    # The longest one call waits on the database: to connect, and for each answer.
    timeout: float = 5.0

    def dsn_kwargs(self) -> dict:
        """Keyword arguments for psycopg2.connect; unset values fall back to libpq defaults."""
        values = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.database,
        }
        return {key: value for key, value in values.items() if value not in (None, "")}


def load_postgres_settings(env: Mapping[str, str] | None = None) -> PostgresSettings:
    """POSTGRES_HOST, _PORT, _USER, _PASSWORD, _DB and _TIMEOUT, checked."""
    env = os.environ if env is None else env
    return PostgresSettings(
        host=env.get("POSTGRES_HOST") or None,
        port=env_int(env, "POSTGRES_PORT", 5432, minimum=1),
        user=env.get("POSTGRES_USER") or None,
        password=env.get("POSTGRES_PASSWORD") or None,
        database=env.get("POSTGRES_DB") or None,
        timeout=env_number(env, "POSTGRES_TIMEOUT", 5.0, 1.0),
    )
