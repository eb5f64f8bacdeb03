"""Reading environment variables: every setting of the service and the engine goes through these.

Each reader checks its value at start-up and raises ConfigError naming the variable, so a
malformed value stops the process with a clear message instead of failing later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class ConfigError(ValueError):
    """An environment variable has a value the service cannot use."""


def env_json_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A JSON list of strings; () when unset or empty."""
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


def env_flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """0 or 1; `default` when unset or empty."""
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    if raw == "0":
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
