"""Admin routes under /api/v1/operator: schema set-up, the job table (jobs and their history) and reading the cluster.

All need the `Admin` header (the spec's `Admin` security scheme: the docs' Authorize button). With
ALLOWED_ADMINS unset every admin request is a 401.
"""

from __future__ import annotations

from flask import Blueprint, Response

from operator_service.api.admin_auth import require_admin
from operator_service.api.context import services
from operator_service.api.errors import ApiError, json_response
from operator_service.api.params import job_query, request_data
from operator_service.cluster.client import Cluster
from operator_service.domain import inspection, job_records
from operator_service.domain.inspection import COMPONENTS
from operator_service.store import migrations

admin = Blueprint("admin", __name__)


@admin.before_request
def _check_admin() -> None:
    require_admin(services().settings)


def _cluster() -> Cluster:
    return inspection.require_cluster(services().cluster, services().settings.kubernetes)


def _param(name: str) -> str:
    """A parameter from the query string or JSON body, as text ("" when absent)."""
    data = request_data()
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _required_job_id(call: str) -> str:
    """The jobId parameter; a 400 naming `call` (e.g. GET:/info) when it is missing or empty."""
    job_id = _param("jobId")
    if not job_id:
        raise ApiError(f'"jobId" is required in the call to {call}', 400)
    return job_id


@admin.route("/pgsqlinit", methods=["POST"])
def init_database() -> Response:
    """Create the database schema, or bring an older one up to date (idempotent).
    ---
    tags: [admin]
    security: [{Admin: []}]
    responses:
      200:
        description: "Schema up to date: {version, applied}, and duplicateRunningAgreements
          [{agreementId, jobIds}] when the upgrade found running jobs sharing an agreementId (kept as they are)"
        schema: {$ref: "#/definitions/SchemaVersion"}
      401: {description: "Admin header is empty., Access admin route failed due to invalid admin address.", schema: {$ref: "#/definitions/Error"}}
      503: {description: Database unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    upgrade = migrations.upgrade(services().db)
    answer: dict = {"version": migrations.LATEST_VERSION, "applied": upgrade.applied}
    if upgrade.shared_agreements:
        answer["duplicateRunningAgreements"] = [
            {"agreementId": agreement, "jobIds": job_ids} for agreement, job_ids in upgrade.shared_agreements.items()
        ]
    return json_response(answer)


@admin.route("/jobs", methods=["GET"])
def list_jobs() -> Response:
    """Jobs from the database, newest first, filtered (AND-ed) and one page at a time.
    ---
    tags: [admin]
    security: [{Admin: []}]
    parameters:
      - {in: query, name: owner, type: string, maxLength: 255, description: "the consumer address, any letter case", x-example: "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"}
      - {in: query, name: status, type: integer, description: "the status (1 Warming up ... 70 Job finished)", x-example: 70}
      - {in: query, name: environment, type: string, maxLength: 255, description: the compute environment (namespace), x-example: ocean-compute}
      - {in: query, name: since, type: string, maxLength: 100, description: "created at or after: epoch seconds or ISO 8601 (UTC unless an offset is given)", x-example: "2026-12-01T00:00:00Z"}
      - {in: query, name: limit, type: integer, minimum: 1, maximum: 1000, description: "jobs per page (default 100)", x-example: 100}
      - {in: query, name: offset, type: integer, minimum: 0, maximum: 1000000000, description: "jobs skipped, for the next pages (default 0)", x-example: 0}
    responses:
      200: {description: "Array of jobs: jobId, agreementId, owner, environment, status, statusText, stopreq, removed, dateCreated, dateFinished, endReason, endReasonText, exitCode", schema: {$ref: "#/definitions/JobSummaries"}}
      400: {description: "A filter that is not valid (status, since, limit, offset)", schema: {$ref: "#/definitions/Error"}}
      401: {description: "Admin header is empty., Access admin route failed due to invalid admin address.", schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: Database unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    return json_response(job_records.list_jobs(services().db, job_query(request_data())))


@admin.route("/job", methods=["GET"])
def inspect_job() -> Response:
    """One job from the database: its row (results with their URLs, never its document) and its history.
    ---
    tags: [admin]
    security: [{Admin: []}]
    parameters:
      - {in: query, name: jobId, type: string, maxLength: 255, required: true, description: the job, x-example: "0f4c9c0d1b2e4a6f8e7d6c5b4a392817"}
    responses:
      200: {description: "The job: what GET /jobs lists, with provider, chainId, lastStatusUpdate, results, dateResultsExpired, algoDID, inputDID and history", schema: {$ref: "#/definitions/JobRecord"}}
      400: {description: jobId missing, schema: {$ref: "#/definitions/Error"}}
      401: {description: "Admin header is empty., Access admin route failed due to invalid admin address.", schema: {$ref: "#/definitions/Error"}}
      404: {description: No job <jobId>, schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: Database unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    return json_response(job_records.inspect_job(services().db, _required_job_id("GET:/job")))


@admin.route("/list", methods=["GET"])
def list_workflows() -> Response:
    """Names of the WorkFlow resources in every environment namespace.
    ---
    tags: [admin]
    security: [{Admin: []}]
    responses:
      200: {description: Array of WorkFlow names (job ids), schema: {$ref: "#/definitions/WorkflowNames"}}
      401: {description: "Admin header is empty., Access admin route failed due to invalid admin address.", schema: {$ref: "#/definitions/Error"}}
      503: {description: Kubernetes or database unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    return json_response(inspection.workflow_names(services().db, _cluster(), services().settings.default_namespace))


@admin.route("/info", methods=["GET"])
def workflow_info() -> Response:
    """The WorkFlow resource of a job.
    ---
    tags: [admin]
    security: [{Admin: []}]
    parameters:
      - {in: query, name: jobId, type: string, maxLength: 255, required: true, description: the job, x-example: "0f4c9c0d1b2e4a6f8e7d6c5b4a392817"}
    responses:
      200: {description: The WorkFlow object, schema: {$ref: "#/definitions/Workflow"}}
      400: {description: jobId missing, schema: {$ref: "#/definitions/Error"}}
      401: {description: "Admin header is empty., Access admin route failed due to invalid admin address.", schema: {$ref: "#/definitions/Error"}}
      404: {description: The jobId <id> is not registered in your namespace., schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: Kubernetes or database unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    return json_response(inspection.workflow_of(services().db, _cluster(), _required_job_id("GET:/info")))


@admin.route("/logs", methods=["GET"])
def pod_logs() -> Response:
    """The log of a job's pod for one component (configure, algorithm, filter, publish).
    ---
    tags: [admin]
    security: [{Admin: []}]
    produces: [text/plain, application/json]
    parameters:
      - {in: query, name: jobId, type: string, maxLength: 255, required: true, description: the job, x-example: "0f4c9c0d1b2e4a6f8e7d6c5b4a392817"}
      - {in: query, name: component, type: string, required: true, enum: [configure, algorithm, filter, publish], description: the pod of the job, x-example: algorithm}
    responses:
      200: {description: The log text, schema: {type: string}}
      400: {description: jobId or component missing or invalid, schema: {$ref: "#/definitions/Error"}}
      401: {description: "Admin header is empty., Access admin route failed due to invalid admin address.", schema: {$ref: "#/definitions/Error"}}
      404: {description: Pod with workflow=<jobId> and component=<component> not found, schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: Kubernetes or database unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    job_id = _param("jobId")
    component = _param("component")
    if not job_id or component not in COMPONENTS:
        raise ApiError(f"jobId and component (one of {', '.join(COMPONENTS)}) are required", 400)
    text = inspection.pod_log(services().db, _cluster(), job_id, component)
    return Response(text, status=200, content_type="text/plain; charset=utf-8")
