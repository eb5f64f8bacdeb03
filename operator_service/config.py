"""The service's settings, read from the environment once, at start-up, and checked there.

A malformed value stops the service with a message naming the variable, instead of
failing later inside a request. The database's settings are the store's
(store/settings.py), logging's are logging_setup.py's; the engine has its own
(engine/settings.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from operator_service.cluster.client import KUBERNETES_MODES
from operator_service.env_vars import ConfigError, env_choice, env_flag, env_int, env_json_list, env_number
from operator_service.logging_setup import LoggingSettings, load_logging_settings
from operator_service.store.settings import PostgresSettings, load_postgres_settings


@dataclass(frozen=True)
class Settings:
    postgres: PostgresSettings
    signature_required: bool = False
    allowed_providers: tuple[str, ...] = ()
    allowed_admins: tuple[str, ...] = field(default=(), repr=False)
    operator_address: str | None = None
    algo_pod_timeout: str | None = None
    storage_expiry: str | None = None
    default_namespace: str = "ocean-compute"
    result_api_key: str | None = field(default=None, repr=False)
    result_client_id: str | None = field(default=None, repr=False)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    nonce_window_seconds: int = 300
    kubernetes: str = "auto"
    db_pool_size: int = 4
    result_timeout_seconds: float = 10.0
    results_dir: str | None = None
    result_url_prefixes: tuple[str, ...] = ()
    reconcile_interval_seconds: float = 30.0
    registration_grace_seconds: float = 60.0
    cors_origins: tuple[str, ...] = ("*",)
    metrics: bool = True
    access_log: bool = True


def _optional_seconds(env: Mapping[str, str], name: str) -> str | None:
    """ALGO_POD_TIMEOUT and STORAGE_EXPIRY are echoed as strings by GET /; they must still be numbers."""
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    env_int(env, name, 0)
    return raw


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
    prefixes = env_json_list(env, name)
    for prefix in prefixes:
        parts = urlsplit(prefix)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise ConfigError(
                f'{name} must list http(s) URL prefixes such as "https://ipfs.example.com/ipfs/", got {prefix!r}'
            )
    return prefixes


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raise ConfigError with the variable's name on a bad value."""
    env = os.environ if env is None else env
    return Settings(
        postgres=load_postgres_settings(env),
        signature_required=env_flag(env, "SIGNATURE_REQUIRED"),
        allowed_providers=tuple(a.lower() for a in env_json_list(env, "ALLOWED_PROVIDERS")),
        allowed_admins=env_json_list(env, "ALLOWED_ADMINS"),
        operator_address=env.get("OPERATOR_ADDRESS") or None,
        algo_pod_timeout=_optional_seconds(env, "ALGO_POD_TIMEOUT"),
        storage_expiry=_optional_seconds(env, "STORAGE_EXPIRY"),
        default_namespace=env.get("DEFAULT_NAMESPACE") or "ocean-compute",
        result_api_key=env.get("X-API-KEY") or None,
        result_client_id=env.get("CLIENT-ID") or None,
        logging=load_logging_settings(env),
        nonce_window_seconds=env_int(env, "NONCE_WINDOW", 300, minimum=1),
        kubernetes=env_choice(env, "KUBERNETES", KUBERNETES_MODES, "auto"),
        db_pool_size=env_int(env, "DB_POOL_SIZE", 4, minimum=1),
        result_timeout_seconds=env_number(env, "RESULT_TIMEOUT", 10.0, 0.1),
        results_dir=env.get("RESULTS_DIR") or None,
        result_url_prefixes=_url_prefixes(env, "RESULT_URL_PREFIXES"),
        reconcile_interval_seconds=env_number(env, "RECONCILE_INTERVAL", 30.0, 0.1),
        registration_grace_seconds=env_number(env, "REGISTRATION_GRACE", 60.0, 0.001),
        cors_origins=_cors_origins(env),
        metrics=env_flag(env, "METRICS", default=True),
        access_log=env_flag(env, "ACCESS_LOG", default=True),
    )
