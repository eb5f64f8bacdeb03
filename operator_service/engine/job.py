"""One job through the stages of Ocean's engine: 20 -> 30/31/32 -> 40 -> 60 -> 70.

Status writes follow Ocean's engine and pods: 20 when the job is taken; 30/31/32 after
configure (as pod-configuration writes them); 40 before the algorithm starts; 60 and 70
only when configure succeeded; dateFinished always, at the end. After 31/32 the
algorithm is skipped, the logs are still published and the status stays 31/32.

A stop request (stopreq=1), read about once a second while the algorithm runs, kills it;
so does passing the time limit (the smaller of maxJobDuration and the job's positive
compute.maxtime), which also sets stopreq=2. A stop requested before the algorithm
starts means it is not started. Either way the job is published and ends at 70, as in
Ocean; the reason is the last line of algorithm.log, and is recorded in the job's row with
status 60 (endReason, endReasonText, exitCode; 31/32 record theirs with that status).

Restart (resume): a job an earlier engine took and did not finish is picked up by the
next start. At 20 or 30 no untrusted code ran yet, so the job starts over. At 40 the
algorithm was interrupted: it is killed if still alive, never run a second time, and the
job is published and ends at 70 with an algorithm.log line saying so (stopreq stays as
it was). At 31/32, 60 or 70 only publishing and finishing are repeated.

The algorithm runs in the job's sandbox (sandbox.py). When it ends, however it ends, every
process it started is killed and the engine checks that none is left; a job the kernel
stopped for using more than its memory, or that filled its disk, gets a line saying so.

Once the job is finished its folder and volume are deleted (the results stay in
RESULTS_DIR), as Ocean's engine deletes the job's volumes, unless DEBUG_NO_CLEANUP is set
(the volume is then unmounted and its file kept). A job the engine leaves for its next
start keeps its folder, with its volume unmounted.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from operator_service.engine import queries as q
from operator_service.engine import sandbox, workspace
from operator_service.engine.fetch import FetchLimits
from operator_service.engine.provision import provision
from operator_service.engine.publish import publish
from operator_service.engine.sandbox import containers
from operator_service.engine.sandbox.isolation import AlgorithmProcess, Isolation, JobSandbox, SandboxError
from operator_service.engine.settings import EngineConfig, OperatorKey
from operator_service.engine.volumes import VolumeError
from operator_service.engine.workspace import open_engine_file, workspace_for
from operator_service.metrics.engine import LIMITS_HIT, PUBLISHED_BYTES, RUN_SECONDS
from operator_service.model.ending import Ending, EndReason
from operator_service.model.status import JobStatus, StopRequest
from operator_service.model.workflow import JobDocument
from operator_service.store.pool import Database, DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
NOTE_PREFIX = "operator-engine: "


class NotStarted(Exception):
    """The algorithm cannot be started: the message says why."""


class EngineStopping(Exception):
    """The engine is shutting down: the job is left as it is, for the next start to resume."""


@dataclass(frozen=True)
class EngineContext:
    db: Database
    config: EngineConfig
    stop: threading.Event
    isolation: Isolation
    operator: OperatorKey  # signs the downloads of remote inputs; its address is the announced consumerAddress

    def call(self, statement: Callable[..., T], *args: Any) -> T:
        """Run a statement of engine_queries, waiting out a database outage."""
        while True:
            try:
                return statement(self.db, *args)
            except DatabaseUnavailable as exc:
                log.warning("database unavailable (%s); retrying", exc)
                if self.stop.wait(self.config.db_retry_seconds):
                    raise EngineStopping() from None


class JobRun:
    def __init__(self, ctx: EngineContext, job_id: str, document: str):
        self.ctx = ctx
        self.job_id = job_id
        self.workspace = workspace_for(ctx.config.work_dir, job_id)
        self.sandbox = JobSandbox(ctx.isolation, ctx.config, self.workspace, job_id)
        self.document = JobDocument.parse(document)
        self.stage = self.document.stage
        self.finished = False

    def run(self) -> None:
        """A job just taken (status 20): every stage."""
        try:
            status = self._configure() if self._create_folder() else JobStatus.DATA_FAILED
            ending = self._algorithm_stage() if status == JobStatus.PROVISIONED else None
            self._publish_and_finish(status, ending)
        finally:
            self._clean_up()

    def resume(self, status: JobStatus) -> None:
        """A job an earlier engine took and did not finish (see the module docstring)."""
        log.info("resuming job %s found at status %s", self.job_id, status)
        if status in (JobStatus.CONFIGURING, JobStatus.PROVISIONED):
            self.ctx.call(q.set_status, self.job_id, JobStatus.CONFIGURING)
            self.run()
            return
        try:
            self._reopen_folder()
            ending = self._end_interrupted_algorithm() if status == JobStatus.RUNNING else None
            configured = (
                status if status in (JobStatus.DATA_FAILED, JobStatus.ALGORITHM_FAILED) else JobStatus.PROVISIONED
            )
            self._publish_and_finish(configured, ending)
        finally:
            self._clean_up()

    def _create_folder(self) -> bool:
        """The job's folder and volume; if the volume cannot be made (no room on the host disk,
        say), the job ends at 31 with a line saying why."""
        self.sandbox.take_uid()
        try:
            workspace.create(self.workspace, self.sandbox.uid, self.sandbox.volume_bytes)
        except VolumeError as exc:
            line = f"The job's volume could not be made: {exc}"
            self._admin_log("configure")(line)
            ending = Ending(EndReason.PROVISIONING_FAILED, line)
            self.ctx.call(q.record_ending, self.job_id, JobStatus.DATA_FAILED, ending)
            return False
        open_engine_file(self.workspace.algorithm_log, "w").close()
        return True

    def _reopen_folder(self) -> None:
        try:
            workspace.reopen(self.workspace)
        except (VolumeError, OSError) as exc:
            log.error("job %s: cannot reopen its volume (%s); publishing what is left", self.job_id, exc)

    def _configure(self) -> JobStatus:
        limits = FetchLimits(self.ctx.config.max_input_bytes, self.ctx.config.fetch_timeout)
        provisioned = provision(
            self.workspace, self.stage, limits, self.ctx.stop, self._admin_log("configure"), self.ctx.operator
        )
        if self.ctx.stop.is_set():
            raise EngineStopping()
        if provisioned.status == JobStatus.PROVISIONED:
            self.ctx.call(q.set_status, self.job_id, provisioned.status)
        else:
            ending = Ending(EndReason.PROVISIONING_FAILED, f"{provisioned.status.text}: {provisioned.failure}")
            self.ctx.call(q.record_ending, self.job_id, provisioned.status, ending)
        return provisioned.status

    def _algorithm_stage(self) -> Ending:
        """Run the algorithm; why it ended."""
        if self._stop_requested():
            return self._ended(
                EndReason.STOPPED_BY_REQUEST, "stop requested before the algorithm started; it was not run"
            )
        self.ctx.call(q.set_status, self.job_id, JobStatus.RUNNING)
        seconds = self._time_limit()
        with open_engine_file(self.workspace.algorithm_log, "a") as output:
            try:
                process = self._start(output, seconds)
            except NotStarted as exc:
                return self._ended(EndReason.NOT_STARTED, str(exc))
            started = time.monotonic()
            try:
                ending = self._supervise(process, seconds)
            finally:
                RUN_SECONDS.observe(time.monotonic() - started)
        return self._end_algorithm(ending)

    def _end_algorithm(self, ending: Ending) -> Ending:
        """Kill whatever the algorithm left running, and say why it ended where the kernel stopped it:
        an algorithm that failed while the kernel was killing its processes for memory was killed for it."""
        try:
            self.sandbox.kill_everything()
        except SandboxError as exc:
            log.error("job %s: %s", self.job_id, exc)
            self._note("some processes of the algorithm could not be killed")
        if self.sandbox.ran_out_of_memory():
            LIMITS_HIT.labels("memory").inc()
            memory = self._ended(
                EndReason.KILLED_FOR_MEMORY,
                f"the algorithm used more than its memory (ramGB={self.ctx.config.ram_gb:g}): the kernel killed it",
                ending.exit_code,
            )
            if ending.reason == EndReason.ALGORITHM_FAILED:
                ending = memory
        if self.sandbox.disk_full():
            LIMITS_HIT.labels("disk").inc()
            self._note(f"the job's disk (diskGB={self.ctx.config.disk_gb:g}) is full: writes beyond it failed")
        return ending

    def _start(self, output: BinaryIO, seconds: float) -> AlgorithmProcess:
        """Start the algorithm (container or sandbox); NotStarted saying why it cannot start."""
        entrypoint = str(self.stage.container.get("entrypoint", ""))
        image = str(self.stage.container.get("image") or "")
        try:
            if self.ctx.isolation.docker and image:
                return self._start_container(image, entrypoint, output)
            if self.ctx.config.use_docker == "on":
                raise NotStarted("the algorithm has no container image and ENGINE_USE_DOCKER=on; it was not run")
            return self._start_local(entrypoint, output, seconds)
        except (OSError, subprocess.SubprocessError, SandboxError) as exc:
            raise NotStarted(f"the algorithm could not be started: {exc}") from None

    def _start_local(self, entrypoint: str, output: BinaryIO, seconds: float) -> AlgorithmProcess:
        volume = self.sandbox.volume_path()
        env = sandbox.algorithm_env(self._pod_env(volume), home=self.sandbox.tmp_path())
        command = entrypoint.replace("$ALGO", f"{volume}/transformations/algorithm")
        process = self.sandbox.start(command, env, output, seconds)
        started = sandbox.process_start_time(process.popen.pid) or ""
        self.workspace.pid_file.write_text(f"{process.popen.pid} {started}\n")
        return process

    def _start_container(self, image: str, entrypoint: str, output: BinaryIO) -> AlgorithmProcess:
        config, ws = self.ctx.config, self.workspace
        reference = containers.image_reference(
            image, self.stage.container.get("tag"), self.stage.container.get("checksum")
        )
        mounts = [
            (ws.inputs, "inputs", True),
            (ws.transformations, "transformations", True),
            (ws.ddos, "ddos", True),
            (ws.outputs, "outputs", False),
            (ws.logs, "logs", False),
        ]
        command = entrypoint.replace("$ALGO", f"{containers.CONTAINER_VOLUME}/transformations/algorithm")
        pod_env = self._pod_env(containers.CONTAINER_VOLUME)
        name = containers.container_name(self.job_id)
        argv = containers.container_argv(
            reference,
            command,
            list(pod_env),
            mounts,
            name=name,
            cpus=config.cpus,
            ram_bytes=config.ram_bytes,
            tmp_bytes=config.disk_bytes,
            max_processes=sandbox.MAX_PROCESSES,
            uid=self.sandbox.uid if self.sandbox.uid is not None else os.getuid(),
            host_network=config.host_network,
        )
        return containers.start_container(argv, pod_env, output, name)

    def _supervise(self, process: AlgorithmProcess, seconds: float) -> Ending:
        """Wait for the algorithm; kill it on a stop request, on timeout or when the engine stops."""
        started = time.monotonic()
        interval = min(1.0, self.ctx.config.poll_seconds)
        while True:
            code = process.wait(interval)
            if code is not None:
                reason = EndReason.FINISHED if code == 0 else EndReason.ALGORITHM_FAILED
                return self._ended(reason, f"the algorithm exited with code {code}", code)
            if self.ctx.stop.is_set():
                process.kill()
                raise EngineStopping()
            if time.monotonic() - started > seconds:
                process.kill()
                self.ctx.call(q.mark_timed_out, self.job_id)
                LIMITS_HIT.labels("timeout").inc()
                return self._ended(
                    EndReason.TIMED_OUT,
                    f"the algorithm was killed after exceeding the time limit of {seconds:g} s (stopreq=2)",
                )
            if self._stop_requested():
                process.kill()
                return self._ended(EndReason.STOPPED_BY_REQUEST, "the algorithm was stopped on request (stopreq=1)")

    def _stop_requested(self) -> bool:
        """One look at stopreq; a database outage reads as "no request" so supervision goes on."""
        try:
            return q.stop_request(self.ctx.db, self.job_id) == StopRequest.REQUESTED
        except DatabaseUnavailable:
            return False

    def _end_interrupted_algorithm(self) -> Ending:
        record = self.workspace.pid_file.read_text() if self.workspace.pid_file.exists() else ""
        if record and sandbox.kill_leftover(record):
            log.info("killed the algorithm of job %s left running by the previous engine", self.job_id)
        if self.ctx.isolation.docker:
            containers.remove_container(containers.container_name(self.job_id))
        return self._ended(
            EndReason.ENGINE_RESTARTED,
            "the engine restarted while the algorithm was running; the algorithm was stopped and is not run again",
        )

    def _publish_and_finish(self, configured: JobStatus, ending: Ending | None) -> None:
        """Publish and finish; the ending, when this run knows it, is recorded with status 60 (a job
        resumed at 60 or 70 keeps the one recorded then)."""
        if configured == JobStatus.PROVISIONED and ending is not None:
            self.ctx.call(q.record_ending, self.job_id, JobStatus.PUBLISHING, ending)
        elif configured == JobStatus.PROVISIONED:
            self.ctx.call(q.set_status, self.job_id, JobStatus.PUBLISHING)
        publish_log = self._admin_log("publish")
        try:
            entries = publish(
                self.workspace, self.ctx.config.results_dir, self.job_id, self.ctx.config.disk_bytes, publish_log
            )
        except OSError as exc:
            log.error("publishing job %s failed: %s", self.job_id, exc)
            entries = []
        PUBLISHED_BYTES.inc(sum(entry["filesize"] for entry in entries))
        self.ctx.call(q.publish_outputs, self.job_id, json.dumps(entries))
        self.ctx.call(q.finish_job, self.job_id, JobStatus.FINISHED if configured == JobStatus.PROVISIONED else None)
        self.finished = True
        log.info("job %s finished (%d results published)", self.job_id, len(entries))

    def _clean_up(self) -> None:
        """Give the sandbox back; delete the folder of a finished job, unmount that of one left for later."""
        try:
            self.sandbox.release()
        except SandboxError as exc:
            log.error("job %s: %s", self.job_id, exc)
        try:
            if self.finished and not self.ctx.config.keep_job_folders:
                workspace.remove(self.workspace)
            else:
                workspace.close(self.workspace)
        except (VolumeError, OSError) as exc:
            log.error("job %s: cannot clean up its folder: %s", self.job_id, exc)

    def _pod_env(self, volume: str) -> dict[str, str]:
        """The variables Ocean's algorithm pod gets."""
        return {
            "DIDS": json.dumps(self.stage.input_dids()),
            "TRANSFORMATION_DID": str(self.stage.algorithm.get("id") or ""),
            "VOLUME": volume,
            "LOGS": f"{volume}/logs",
            "INPUTS": f"{volume}/inputs",
            "OUTPUTS": f"{volume}/outputs",
            "secret": self.document.secret,
        }

    def _time_limit(self) -> float:
        """maxJobDuration, or the job's compute.maxtime when that is positive and smaller."""
        requested = self.stage.max_time()
        limit = self.ctx.config.max_job_duration
        return min(limit, requested) if requested is not None else limit

    def _ended(self, reason: EndReason, note: str, exit_code: int | None = None) -> Ending:
        """Write `note` into algorithm.log; the ending it tells, as a sentence."""
        self._note(note)
        return Ending(reason, f"{note[0].upper()}{note[1:]}.", exit_code)

    def _note(self, text: str) -> None:
        """Append the engine's own line to algorithm.log, where the Provider's user reads it.

        The algorithm may have replaced the file by something else; the job goes on regardless.
        """
        try:
            with open_engine_file(self.workspace.algorithm_log, "a") as output:
                output.write(f"\n{NOTE_PREFIX}{text}\n".encode())
        except OSError as exc:
            log.warning("job %s: cannot write to algorithm.log (%s): %s", self.job_id, exc, text)

    def _admin_log(self, name: str) -> Callable[[str], None]:
        path = self.workspace.adminlogs / f"{name}.log"

        def write(line: str) -> None:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")

        return write
