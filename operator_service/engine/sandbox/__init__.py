"""The local engine's sandbox: namespaces (bubblewrap.py), a uid per job (uids.py), cgroups
(cgroups.py), the docker path (containers.py), and how they are put together with the job's
volume (../volumes.py) for one job (isolation.py)."""

from operator_service.engine.sandbox.isolation import (
    MAX_PROCESSES,
    AlgorithmProcess,
    Isolation,
    JobSandbox,
    SandboxError,
    algorithm_env,
    kill_leftover,
    kill_leftovers,
    process_start_time,
    set_up_isolation,
)

__all__ = [
    "MAX_PROCESSES",
    "AlgorithmProcess",
    "Isolation",
    "JobSandbox",
    "SandboxError",
    "algorithm_env",
    "kill_leftover",
    "kill_leftovers",
    "process_start_time",
    "set_up_isolation",
]
