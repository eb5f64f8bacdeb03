"""Settings read from the environment once, at start-up, and checked there.

A malformed value stops the service with a message naming the variable, instead of
failing later inside a request.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional
from urllib.parse import urlsplit

KUBERNETES_MODES = ("auto", "on", "off")


class ConfigError(ValueError):
    """An environment variable has a value the service cannot use."""


@dataclass(frozen=True)
class PostgresSettings:
    host: Optional[str]
    port: int
    user: Optional[str]
    password: Optional[str] = field(repr=False)
    database: Optional[str]
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


@dataclass(frozen=True)
class Settings:
    postgres: PostgresSettings
    signature_required: bool = False
    allowed_providers: tuple[str, ...] = ()
    allowed_admins: tuple[str, ...] = field(default=(), repr=False)
    operator_address: Optional[str] = None
    algo_pod_timeout: Optional[str] = None
    storage_expiry: Optional[str] = None
    default_namespace: str = "ocean-compute"
    result_api_key: Optional[str] = field(default=None, repr=False)
    result_client_id: Optional[str] = field(default=None, repr=False)
    log_cfg: Optional[str] = None
    log_level: Optional[str] = None
    nonce_window_seconds: int = 300
    kubernetes: str = "auto"
    db_pool_size: int = 4
    result_timeout_seconds: float = 10.0
    results_dir: Optional[str] = None
    result_url_prefixes: tuple[str, ...] = ()
    reconcile_interval_seconds: float = 30.0
    registration_grace_seconds: float = 60.0
    cors_origins: tuple[str, ...] = ("*",)


def _json_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return ()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f'{name} must be a JSON list of strings, e.g. ["0xabc..."]: {exc}') from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f'{name} must be a JSON list of strings, e.g. ["0xabc..."], got {raw!r}')
    return tuple(value)


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    """A whole number of at least `minimum`; `default` when unset or empty."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    """A number of at least `minimum`; `default` when unset or empty."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _optional_seconds(env: Mapping[str, str], name: str) -> Optional[str]:
    """ALGO_POD_TIMEOUT and STORAGE_EXPIRY are echoed as strings by GET /; they must still be numbers."""
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    env_int(env, name, 0)
    return raw


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """0 or 1; unset or empty is 0."""
    raw = env.get(name, "0").strip()
    if raw in ("", "0"):
        return False
    if raw == "1":
        return True
    raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")


def env_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    """One of `choices` (any letter case); `default` when unset or empty."""
    raw = (env.get(name) or "").strip().lower() or default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _log_level(env: Mapping[str, str]) -> Optional[str]:
    raw = env.get("LOG_LEVEL")
    if not raw:
        return None
    level = raw.strip().upper()
    if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
        raise ConfigError(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {raw!r}")
    return level


def _log_cfg(env: Mapping[str, str]) -> Optional[str]:
    path = env.get("LOG_CFG") or None
    if path and not os.path.isfile(path):
        raise ConfigError(f"LOG_CFG names a file that does not exist: {path}")
    return path


def _cors_origins(env: Mapping[str, str]) -> tuple[str, ...]:
    """CORS_ORIGINS: `*` (the default: any origin), or a JSON list of origins (`[]`: none)."""
    raw = (env.get("CORS_ORIGINS") or "").strip()
    if raw in ("", "*"):
        return ("*",)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(
            'CORS_ORIGINS must be *, or a JSON list of origins such as ["https://market.example"]'
            f" ([] for none), got {raw!r}"
        )
    return tuple(value)


def _url_prefixes(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """http(s) URL prefixes, each naming at least a host."""
    prefixes = _json_list(env, name)
    for prefix in prefixes:
        parts = urlsplit(prefix)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise ConfigError(f"{name} must list http(s) URL prefixes such as \"https://ipfs.example.com/ipfs/\","
                              f" got {prefix!r}")
    return prefixes


def load_settings(env: Optional[Mapping[str, str]] = None) -> Settings:
    """Read and check every setting; raise ConfigError with the variable's name on a bad value."""
    env = os.environ if env is None else env
    postgres = PostgresSettings(
        host=env.get("POSTGRES_HOST") or None,
        port=env_int(env, "POSTGRES_PORT", 5432, minimum=1),
        user=env.get("POSTGRES_USER") or None,
        password=env.get("POSTGRES_PASSWORD") or None,
        database=env.get("POSTGRES_DB") or None,
        timeout=env_number(env, "POSTGRES_TIMEOUT", 5.0, 1.0),
    )
    return Settings(
        postgres=postgres,
        signature_required=env_flag(env, "SIGNATURE_REQUIRED"),
        allowed_providers=tuple(a.lower() for a in _json_list(env, "ALLOWED_PROVIDERS")),
        allowed_admins=_json_list(env, "ALLOWED_ADMINS"),
        operator_address=env.get("OPERATOR_ADDRESS") or None,
        algo_pod_timeout=_optional_seconds(env, "ALGO_POD_TIMEOUT"),
        storage_expiry=_optional_seconds(env, "STORAGE_EXPIRY"),
        default_namespace=env.get("DEFAULT_NAMESPACE") or "ocean-compute",
        result_api_key=env.get("X-API-KEY") or None,
        result_client_id=env.get("CLIENT-ID") or None,
        log_cfg=_log_cfg(env),
        log_level=_log_level(env),
        nonce_window_seconds=env_int(env, "NONCE_WINDOW", 300, minimum=1),
        kubernetes=env_choice(env, "KUBERNETES", KUBERNETES_MODES, "auto"),
        db_pool_size=env_int(env, "DB_POOL_SIZE", 4, minimum=1),
        result_timeout_seconds=env_number(env, "RESULT_TIMEOUT", 10.0, 0.1),
        results_dir=env.get("RESULTS_DIR") or None,
        result_url_prefixes=_url_prefixes(env, "RESULT_URL_PREFIXES"),
        reconcile_interval_seconds=env_number(env, "RECONCILE_INTERVAL", 30.0, 0.1),
        registration_grace_seconds=env_number(env, "REGISTRATION_GRACE", 60.0, 0.001),
        cors_origins=_cors_origins(env),
    )
