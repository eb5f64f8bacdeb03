"""Why a job ended: a machine-readable reason, a sentence for people, and the algorithm's exit code.

The local engine records its ending in the job's row (endReason, endReasonText, exitCode).
Ocean's operator-engine records none: for its jobs, and for any finished job without one,
the reason is derived from what every engine writes, the status and stopreq.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from operator_service.model.status import JobStatus, StopRequest


class EndReason(str, Enum):
    FINISHED = "finished"  # the algorithm exited with code 0
    ALGORITHM_FAILED = "algorithm-failed"  # it exited with another code (exitCode)
    KILLED_FOR_MEMORY = "killed-for-memory"  # the kernel killed it for using more than ramGB
    TIMED_OUT = "timed-out"  # killed at the time limit (stopreq 2)
    STOPPED_BY_REQUEST = "stopped-by-request"  # PUT or DELETE /compute (stopreq 1)
    PROVISIONING_FAILED = "provisioning-failed"  # an input or the algorithm could not be fetched (31, 32)
    ENGINE_RESTARTED = "engine-restarted"  # the engine stopped while the algorithm ran; it is not run again
    NOT_STARTED = "algorithm-not-started"  # the algorithm could not be started
    UNKNOWN = "unknown"  # a job that ended otherwise, with no reason recorded


@dataclass(frozen=True)
class Ending:
    reason: EndReason
    text: str
    exit_code: int | None = None


def ending_of(
    status: int | None,
    stopreq: int | None,
    finished: bool,
    reason: str | None,
    text: str | None,
    exit_code: int | None,
) -> Ending | None:
    """The ending of a job as one of its rows (or history entries) holds it: None while it has not
    finished and no reason is recorded; the recorded reason; else the one derived."""
    if reason:
        known = reason if reason in EndReason._value2member_map_ else EndReason.UNKNOWN.value
        return Ending(EndReason(known), text or "", exit_code)
    if not finished:
        return None
    return derived_ending(status, stopreq)


def derived_ending(status: int | None, stopreq: int | None) -> Ending:
    """The reason of a finished job whose engine recorded none, from its status and stopreq."""
    if status == JobStatus.DATA_FAILED:
        return Ending(EndReason.PROVISIONING_FAILED, "Data provisioning failed (the engine recorded no details).")
    if status == JobStatus.ALGORITHM_FAILED:
        return Ending(EndReason.PROVISIONING_FAILED, "Algorithm provisioning failed (the engine recorded no details).")
    if stopreq == StopRequest.REQUESTED:
        return Ending(EndReason.STOPPED_BY_REQUEST, "The job was stopped on request (stopreq=1).")
    if stopreq == StopRequest.TIMED_OUT:
        return Ending(EndReason.TIMED_OUT, "The job was stopped at its time limit (stopreq=2).")
    if status == JobStatus.FINISHED:
        return Ending(EndReason.FINISHED, "The job finished (the engine recorded no details).")
    return Ending(EndReason.UNKNOWN, f"The job ended at status {status} (the engine recorded no reason).")


def ending_fields(ending: Ending | None) -> dict:
    """The keys every answer about a job adds: endReason, endReasonText, exitCode (null while it runs)."""
    if ending is None:
        return {"endReason": None, "endReasonText": None, "exitCode": None}
    return {"endReason": ending.reason.value, "endReasonText": ending.text, "exitCode": ending.exit_code}
