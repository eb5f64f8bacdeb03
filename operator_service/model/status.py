"""A job's status and stop request: the numbers and texts every engine and the Provider use.

The texts are exactly what Ocean's engines store, the trailing space of "Running algorithm "
included. A stopped, timed-out or failed algorithm still ends at FINISHED, as in Ocean:
`StopRequest` says why a job was stopped.
"""

from __future__ import annotations

from enum import IntEnum


class JobStatus(IntEnum):
    REGISTERING = 0  # ours: a registration under way, never shown, never handed to an engine
    QUEUED = 1
    STARTED = 10
    CONFIGURING = 20
    PROVISIONED = 30
    DATA_FAILED = 31
    ALGORITHM_FAILED = 32
    RUNNING = 40
    FILTERING = 50
    PUBLISHING = 60
    FINISHED = 70

    @property
    def text(self) -> str:
        return _TEXTS[self]


_TEXTS = {
    JobStatus.REGISTERING: "Registering",
    JobStatus.QUEUED: "Warming up",
    JobStatus.STARTED: "Job started",
    JobStatus.CONFIGURING: "Configuring volumes",
    JobStatus.PROVISIONED: "Provisioning success",
    JobStatus.DATA_FAILED: "Data provisioning failed",
    JobStatus.ALGORITHM_FAILED: "Algorithm provisioning failed",
    JobStatus.RUNNING: "Running algorithm ",
    JobStatus.FILTERING: "Filtering results",
    JobStatus.PUBLISHING: "Publishing results",
    JobStatus.FINISHED: "Job finished",
}


class StopRequest(IntEnum):
    """The `stopreq` column: why a job was stopped, if it was."""

    NONE = 0
    REQUESTED = 1  # PUT /compute
    TIMED_OUT = 2  # the engine's time limit
