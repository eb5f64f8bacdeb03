"""The local engine's settings, read from the environment once at start-up.

The environment advert uses the variable names of Ocean's operator-engine (nCPU, ramGB,
diskGB, maxJobs, maxJobDuration, priceMinute, description, cpuType, nGPU, gpuType,
STORAGE_EXPIRY, OPERATOR_PRIVATE_KEY, DEBUG_NO_CLEANUP); the ENGINE_* variables are the
local engine's own.
See README.md, "The local engine" for the full list with defaults.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from eth_keys.datatypes import PrivateKey
from eth_keys.exceptions import ValidationError

from operator_service.env_vars import ConfigError, env_choice, env_flag, env_number

DOCKER_MODES = ("auto", "on", "off")
SANDBOX_MODES = ("bwrap", "unsafe-no-sandbox")
KEY_FILE = ".operator-key"  # a job id never starts with a dot: no clash with job folders
DEFAULT_WORK_DIR = ".operator-data/jobs"
DEFAULT_RESULTS_DIR = ".operator-data/results"


@dataclass(frozen=True)
class EngineConfig:
    namespace: str = "ocean-compute"
    cpus: int = 1
    cpu_type: str = ""
    gpus: int = 0
    gpu_type: str = ""
    ram_gb: float = 1.0
    disk_gb: float = 1.0
    price_per_minute: float = 0.0
    description: str = ""
    max_jobs: int = 10
    max_job_duration: float = 60.0
    storage_expiry: int = 0
    min_free_gb: float = 1.0
    work_dir: Path = field(default_factory=lambda: Path(DEFAULT_WORK_DIR).resolve())
    results_dir: Path = field(default_factory=lambda: Path(DEFAULT_RESULTS_DIR).resolve())
    poll_seconds: float = 2.0
    use_docker: str = "auto"
    max_input_bytes: int = 100 * 1024 * 1024
    fetch_timeout: float = 300.0
    keep_job_folders: bool = False
    private_key: str | None = field(default=None, repr=False)
    sandbox: str = "bwrap"
    bwrap: str | None = None
    host_network: bool = False
    metrics_bind: str | None = None  # HOST:PORT where the engine serves its metrics; None: not served
    # Not settings of their own: the pauses before asking the database again, after an outage
    # (db_retry_seconds) or while another engine holds the namespace (lease_retry_seconds).
    db_retry_seconds: float = 1.0
    lease_retry_seconds: float = 1.0

    @property
    def ram_bytes(self) -> int:
        return int(self.ram_gb * 1024**3)

    @property
    def disk_bytes(self) -> int:
        return int(self.disk_gb * 1024**3)


def _whole(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = env_number(env, name, default, minimum)
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number, got {env.get(name)!r}")
    return int(value)


def _finite(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    value = env_number(env, name, default, minimum)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {env.get(name)!r}")
    return value


def _folder(env: Mapping[str, str], name: str, default: str) -> Path:
    return Path(env.get(name) or default).expanduser().resolve()


def _metrics_bind(env: Mapping[str, str]) -> str | None:
    """ENGINE_METRICS_BIND: HOST:PORT ([IPv6]:PORT), or unset for no metrics server."""
    raw = (env.get("ENGINE_METRICS_BIND") or "").strip()
    if not raw:
        return None
    try:
        split_bind(raw)
    except ValueError:
        raise ConfigError(f"ENGINE_METRICS_BIND must be HOST:PORT, e.g. 127.0.0.1:9150, got {raw!r}") from None
    return raw


def split_bind(bind: str) -> tuple[str, int]:
    """(host, port) of HOST:PORT or [IPv6]:PORT; ValueError if it is neither."""
    host, separator, port = bind.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not separator or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(bind)
    return host, int(port)


def _private_key(env: Mapping[str, str]) -> str | None:
    raw = (env.get("OPERATOR_PRIVATE_KEY") or "").strip()
    if not raw:
        return None
    try:
        PrivateKey(bytes.fromhex(raw.removeprefix("0x")))
    except (ValueError, ValidationError):
        raise ConfigError("OPERATOR_PRIVATE_KEY must be a 32-byte hex private key") from None
    return raw


def load_engine_config(env: Mapping[str, str] | None = None) -> EngineConfig:
    """Read and check every engine setting; ConfigError names the variable at fault."""
    env = os.environ if env is None else env
    return EngineConfig(
        namespace=(env.get("ENGINE_NAMESPACE") or "ocean-compute").strip(),
        cpus=_whole(env, "nCPU", 1, 1),
        cpu_type=env.get("cpuType", ""),
        gpus=_whole(env, "nGPU", 0, 0),
        gpu_type=env.get("gpuType", ""),
        ram_gb=env_number(env, "ramGB", 1.0, 0.125),
        disk_gb=env_number(env, "diskGB", 1.0, 0.001),
        price_per_minute=env_number(env, "priceMinute", 0.0, 0.0),
        description=env.get("description", ""),
        max_jobs=_whole(env, "maxJobs", 10, 1),
        max_job_duration=env_number(env, "maxJobDuration", 60.0, 0.1),
        storage_expiry=_whole(env, "STORAGE_EXPIRY", 0, 0),
        min_free_gb=_finite(env, "ENGINE_MIN_FREE_GB", 1.0, 0.0),
        work_dir=_folder(env, "ENGINE_WORK_DIR", DEFAULT_WORK_DIR),
        results_dir=_folder(env, "RESULTS_DIR", DEFAULT_RESULTS_DIR),
        poll_seconds=env_number(env, "ENGINE_POLL_SECONDS", 2.0, 0.01),
        use_docker=env_choice(env, "ENGINE_USE_DOCKER", DOCKER_MODES, "auto"),
        max_input_bytes=_whole(env, "ENGINE_MAX_INPUT_BYTES", 100 * 1024 * 1024, 1),
        fetch_timeout=env_number(env, "ENGINE_FETCH_TIMEOUT", 300.0, 0.1),
        keep_job_folders=(env.get("DEBUG_NO_CLEANUP") or "0").strip() not in ("", "0"),
        private_key=_private_key(env),
        sandbox=env_choice(env, "ENGINE_SANDBOX", SANDBOX_MODES, "bwrap"),
        bwrap=(env.get("ENGINE_BWRAP") or "").strip() or None,
        host_network=env_flag(env, "ENGINE_UNSAFE_HOST_NETWORK"),
        metrics_bind=_metrics_bind(env),
    )


@dataclass(frozen=True)
class OperatorKey:
    """The key whose address the engine announces as consumerAddress, and which signs its
    downloads from Providers; `generated` when OPERATOR_PRIVATE_KEY is not set."""

    key: PrivateKey = field(repr=False)
    generated: bool

    @property
    def address(self) -> str:
        return self.key.public_key.to_checksum_address()

    def origin(self) -> str:
        """Where the key comes from, in words for the logs (never the key itself)."""
        if self.generated:
            return f"OPERATOR_PRIVATE_KEY is not set: a key this engine generated, kept in ENGINE_WORK_DIR/{KEY_FILE}"
        return "the key of OPERATOR_PRIVATE_KEY"


def load_operator_key(config: EngineConfig) -> OperatorKey:
    return OperatorKey(operator_key(config), generated=not config.private_key)


def operator_key(config: EngineConfig) -> PrivateKey:
    """OPERATOR_PRIVATE_KEY, or a key generated once and kept (mode 0600) in the work dir."""
    if config.private_key:
        return PrivateKey(bytes.fromhex(config.private_key.removeprefix("0x")))
    path = config.work_dir / KEY_FILE
    if path.exists():
        return PrivateKey(bytes.fromhex(path.read_text().strip()))
    config.work_dir.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.to_hex().removeprefix("0x") + "\n")
    return key


def _new_key() -> PrivateKey:
    while True:
        try:
            return PrivateKey(os.urandom(32))
        except ValidationError:  # the 1-in-2**128 value outside the curve order
            continue
