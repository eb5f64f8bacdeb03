"""The routes the Ocean Provider calls, under /api/v1/operator.

Each route reads its parameters (api/params.py), checks the Provider's signature
(domain/signatures.py), makes one call into the job lifecycle (domain/lifecycle.py) and
answers with its views (api/views.py). The YAML after `---` in each docstring is the
route's Swagger documentation.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from operator_service.api import views
from operator_service.api.context import services
from operator_service.api.errors import ApiError, json_response
from operator_service.api.observability import request_id
from operator_service.api.params import check_required, job_filter, request_data, text_field
from operator_service.domain import environments, lifecycle
from operator_service.domain.signatures import verify_signature
from operator_service.store.jobs import JobFilter
from operator_service.store.nonces import SignedNonce

operator = Blueprint("operator", __name__)


def _statuses(rows: list[tuple]) -> Response:
    return json_response([views.status_object(row) for row in rows])


@operator.route("/compute", methods=["POST"])
def start_compute_job() -> Response:
    """Create a compute job: registered in Postgres (status 1) and, with a cluster, as a WorkFlow.

    Signed by the Provider over owner + nonce. To try it here, run
    `operator-service sign --owner <owner> --key <Provider key>` and paste the nonce and
    providerSignature it prints into the body, and a new agreementId (see the top of the page).
    ---
    tags: [operation]
    consumes: [application/json]
    parameters:
      - in: body
        name: body
        required: true
        schema:
          type: object
          required: [workflow, agreementId, owner, providerSignature, environment, nonce]
          properties:
            workflow: {type: object, description: "{stages: [one stage with algorithm, compute, input, output]}"}
            agreementId: {type: string, maxLength: 255, description: order transaction id; one running job per agreementId}
            owner: {type: string, maxLength: 255, description: consumer address}
            providerSignature: {type: string, maxLength: 1024, description: "Provider signature of owner + nonce: operator-service sign --owner <owner> prints one"}
            environment: {type: string, maxLength: 255, description: compute environment id (engine namespace)}
            nonce: {type: string, maxLength: 100, description: "time-based nonce (s, ms, us or ns); each used once; the one that was signed"}
            chainId: {type: integer, description: copied into workflow.chainId}
          example:
            workflow:
              stages:
                - index: 0
                  input: []
                  algorithm:
                    id: ""
                    rawcode: "print('hello from the algorithm')"
                    container: {entrypoint: "python3 $ALGO", image: python, tag: "3.11", checksum: ""}
                  compute: {Instances: 1, namespace: ocean-compute, maxtime: 60}
                  output: {}
            agreementId: "0x7d3f4e1a9b2c8d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e"
            owner: "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"
            providerSignature: "0x9669113f40a9ee3dd011d9a88fdb79e7ac90fa912c66ca66e632dbc615acb97911e14155a12ed23622a35a752ad355dbb26cfb07d187c9e48382cb836e420a9c00"
            environment: ocean-compute
            nonce: "1764633600000000000"
            chainId: 8996
    responses:
      200: {description: "Array with the new job's status object", schema: {$ref: "#/definitions/StatusObjects"}}
      400: {description: "Invalid request, e.g. payload seems empty., Missing stages, Environment invalid or does not exist, `agreementId` already in use for other job., a text over its length limit", schema: {$ref: "#/definitions/Error"}}
      401: {description: "Provider not allowed, or nonce replayed / too old", schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: Database or Kubernetes unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    data = check_required(
        ["workflow", "agreementId", "owner", "providerSignature", "environment", "nonce"],
        request_data(),
        "POST:/compute",
    )
    owner = text_field(data, "owner")
    signed = verify_signature(services().settings, data["providerSignature"], owner, None, data["nonce"])
    job = lifecycle.JobRequest(
        agreement_id=str(data["agreementId"]),
        owner=owner,
        environment=data["environment"],
        chain_id=data.get("chainId"),
        workflow=data["workflow"],
        request_id=request_id(),
    )
    return _statuses([lifecycle.start_job(services().db, services().cluster, job, signed)])


@operator.route("/compute", methods=["PUT"])
def stop_compute_job() -> Response:
    """Request a stop: stopreq=1 on the matching jobs, and an annotation on their WorkFlows.

    An annotation the cluster did not take is retried by the reconciler until it lands
    (and by a repeated PUT): the stop is recorded either way, and the 503 says so.

    Signed by the Provider over owner + jobId + nonce (jobId only when given). To try it here, run
    `operator-service sign --owner <owner> --job-id <jobId> --key <Provider key>` and paste the nonce
    and providerSignature it prints (see the top of the page).
    ---
    tags: [operation]
    parameters:
      - {in: query, name: owner, type: string, maxLength: 255, required: true, description: consumer address, x-example: "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"}
      - {in: query, name: providerSignature, type: string, maxLength: 1024, required: true, description: "signature of owner + jobId + nonce, as operator-service sign prints it", x-example: "0x4368eda6800747977cd69b00c1aadcd7439b7c2321b242e38cf441d46c98ec54621acfd00232402d7427fa2ed0144cc7d66c308f64e60449ac1909dbe937693300"}
      - {in: query, name: nonce, type: string, maxLength: 100, required: true, description: the nonce that was signed, x-example: "1764633600000000000"}
      - {in: query, name: jobId, type: string, maxLength: 255, description: the job (part of the signed message), x-example: "0f4c9c0d1b2e4a6f8e7d6c5b4a392817"}
      - {in: query, name: agreementId, type: string, maxLength: 255, description: "the order's agreementId (not signed); clear it to match by jobId alone", x-example: "0x7d3f4e1a9b2c8d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e"}
    responses:
      200: {description: Array of status objects of the matching jobs, schema: {$ref: "#/definitions/StatusObjects"}}
      400: {description: "payload seems empty., \\"owner\\" is required in the call to PUT:/compute, Failed to recover address", schema: {$ref: "#/definitions/Error"}}
      401: {description: "Provider not allowed, or nonce replayed / too old", schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: "Database or Kubernetes unavailable (a recorded stop's annotation is retried until it lands)", schema: {$ref: "#/definitions/Error"}}
    """
    filters, signed = _signed_job_filter("PUT:/compute")
    return _statuses(lifecycle.stop_jobs(services().db, services().cluster, filters, signed))


@operator.route("/compute", methods=["DELETE"])
def delete_compute_job() -> Response:
    """Delete jobs: their WorkFlows are deleted, removed=1, and a stop is requested if still running.

    Signed by the Provider over owner + jobId + nonce (jobId only when given). To try it here, run
    `operator-service sign --owner <owner> --job-id <jobId> --key <Provider key>` and paste the nonce
    and providerSignature it prints (see the top of the page).
    ---
    tags: [operation]
    parameters:
      - {in: query, name: owner, type: string, maxLength: 255, required: true, description: consumer address, x-example: "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"}
      - {in: query, name: providerSignature, type: string, maxLength: 1024, required: true, description: "signature of owner + jobId + nonce, as operator-service sign prints it", x-example: "0x4368eda6800747977cd69b00c1aadcd7439b7c2321b242e38cf441d46c98ec54621acfd00232402d7427fa2ed0144cc7d66c308f64e60449ac1909dbe937693300"}
      - {in: query, name: nonce, type: string, maxLength: 100, required: true, description: the nonce that was signed, x-example: "1764633600000000000"}
      - {in: query, name: jobId, type: string, maxLength: 255, description: the job (part of the signed message), x-example: "0f4c9c0d1b2e4a6f8e7d6c5b4a392817"}
      - {in: query, name: agreementId, type: string, maxLength: 255, description: "the order's agreementId (not signed); clear it to match by jobId alone", x-example: "0x7d3f4e1a9b2c8d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e"}
    responses:
      200: {description: Array of status objects of the deleted jobs, schema: {$ref: "#/definitions/StatusObjects"}}
      400: {description: Invalid request, schema: {$ref: "#/definitions/Error"}}
      401: {description: "Provider not allowed, or nonce replayed / too old", schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: Database or Kubernetes unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    filters, signed = _signed_job_filter("DELETE:/compute")
    return _statuses(lifecycle.delete_jobs(services().db, services().cluster, filters, signed))


@operator.route("/compute", methods=["GET"])
def get_compute_job_status() -> Response:
    """Status of the jobs matching agreementId, jobId and owner (AND-ed), newest first.

    Signed by the Provider over owner + jobId + nonce (jobId only when given). To try it here, run
    `operator-service sign --owner <owner> --job-id <jobId> --key <Provider key>` and paste the nonce
    and providerSignature it prints (see the top of the page).
    ---
    tags: [operation]
    parameters:
      - {in: query, name: owner, type: string, maxLength: 255, description: consumer address, x-example: "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"}
      - {in: query, name: jobId, type: string, maxLength: 255, description: the job (part of the signed message), x-example: "0f4c9c0d1b2e4a6f8e7d6c5b4a392817"}
      - {in: query, name: agreementId, type: string, maxLength: 255, description: "the order's agreementId (not signed); clear it to match by jobId alone", x-example: "0x7d3f4e1a9b2c8d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e"}
      - {in: query, name: providerSignature, type: string, maxLength: 1024, required: true, description: "signature of owner + jobId + nonce, as operator-service sign prints it", x-example: "0x4368eda6800747977cd69b00c1aadcd7439b7c2321b242e38cf441d46c98ec54621acfd00232402d7427fa2ed0144cc7d66c308f64e60449ac1909dbe937693300"}
      - {in: query, name: nonce, type: string, maxLength: 100, required: true, description: the nonce that was signed, x-example: "1764633600000000000"}
    responses:
      200:
        description: "Array of status objects: agreementId, jobId, owner, status, statusText, dateCreated, dateFinished, results, stopreq, removed, algoDID, inputDID"
        schema: {$ref: "#/definitions/StatusObjects"}
      400: {description: "You have to specify one of agreementId, jobId or owner; Failed to recover address", schema: {$ref: "#/definitions/Error"}}
      401: {description: "Provider not allowed, or nonce replayed / too old", schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: Database unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    data = request_data()
    if not isinstance(data, dict):
        raise ApiError("You have to specify one of agreementId, jobId or owner", 400)
    filters = job_filter(data)
    if "nonce" not in data:
        raise ApiError('"nonce" is required in the call to GET:/compute', 400)
    signed = _verify(data, filters)
    return _statuses(lifecycle.job_statuses(services().db, filters, signed))


def _signed_job_filter(call: str) -> tuple[JobFilter, SignedNonce]:
    """The filters of a signed PUT or DELETE, and its nonce once its signature is accepted."""
    data = check_required(["owner", "providerSignature", "nonce"], request_data(), call)
    filters = job_filter(data)
    return filters, _verify(data, filters)


def _verify(data: dict, filters: JobFilter) -> SignedNonce:
    return verify_signature(
        services().settings, data.get("providerSignature"), filters.owner, filters.job_id, data["nonce"]
    )


@operator.route("/runningjobs", methods=["GET"])
def get_running_jobs() -> Response:
    """Every unfinished job, oldest first.
    ---
    tags: [operation]
    responses:
      200:
        description: "Array of agreementId, jobId, owner, status, statusText, dateCreated, namespace, algoDID, inputDID"
        schema: {$ref: "#/definitions/RunningJobs"}
      503: {description: Database unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    return json_response([views.running_object(row) for row in lifecycle.running_jobs(services().db)])


@operator.route("/getResult", methods=["GET"])
def get_result() -> Response:
    """Stream one result file of a job (index into its outputs, logs included).

    Signed by the Provider over owner + jobId + nonce (jobId only when given). To try it here, run
    `operator-service sign --owner <owner> --job-id <jobId> --key <Provider key>` and paste the nonce
    and providerSignature it prints (see the top of the page).
    ---
    tags: [operation]
    produces: [application/octet-stream, application/json, "*/*"]
    parameters:
      - {in: query, name: index, type: integer, required: true, description: "position in the job's results (GET /compute lists them)", x-example: 0}
      - {in: query, name: jobId, type: string, maxLength: 255, required: true, description: the job (part of the signed message), x-example: "0f4c9c0d1b2e4a6f8e7d6c5b4a392817"}
      - {in: query, name: owner, type: string, maxLength: 255, required: true, description: consumer address, x-example: "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"}
      - {in: query, name: providerSignature, type: string, maxLength: 1024, required: true, description: "signature of owner + jobId + nonce, as operator-service sign prints it", x-example: "0x4368eda6800747977cd69b00c1aadcd7439b7c2321b242e38cf441d46c98ec54621acfd00232402d7427fa2ed0144cc7d66c308f64e60449ac1909dbe937693300"}
      - {in: query, name: nonce, type: string, maxLength: 100, required: true, description: the nonce that was signed, x-example: "1764633600000000000"}
      - {in: header, name: Range, type: string, description: "a part of the file: forwarded to http(s) storage; for a local (file://) result, one byte range is answered with 206, several are ignored", x-example: "bytes=0-1023"}
    responses:
      200: {description: The file, schema: {type: file}}
      206: {description: "Part of the file (with Range)", schema: {type: file}}
      400: {description: "Invalid request", schema: {$ref: "#/definitions/Error"}}
      401: {description: "Provider not allowed, or nonce replayed / too old", schema: {$ref: "#/definitions/Error"}}
      403: {description: "The stored result is not served: outside RESULT_URL_PREFIXES or RESULTS_DIR, another scheme, or a URL that cannot be used", schema: {$ref: "#/definitions/Error"}}
      404: {description: "No results for job <jobId>, Negative index, No such index, owner or provider mismatch, the result file does not exist", schema: {$ref: "#/definitions/Error"}}
      410: {description: "The job's results expired: the engine deleted them STORAGE_EXPIRY after the job finished (its dateResultsExpired)", schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      416: {description: "Range asks for no byte of a local result (Content-Range: bytes */size)", schema: {$ref: "#/definitions/Error"}}
      502: {description: Result storage unreachable, schema: {$ref: "#/definitions/Error"}}
      503: {description: Database unavailable, schema: {$ref: "#/definitions/Error"}}
      504: {description: Result storage did not answer in time, schema: {$ref: "#/definitions/Error"}}
      default: {description: "Any other status is the result storage's own, passed through with its body (as the original did)"}
    """
    data = request_data()
    if data is None:
        raise ApiError("Both index & job_id are required", 400)
    check_required(["owner", "providerSignature", "nonce", "index", "jobId"], data, "GET:/getResult")
    owner, job_id = str(data["owner"]), str(data["jobId"])
    signed = verify_signature(services().settings, data["providerSignature"], owner, job_id, data["nonce"])
    index = _index(data["index"])
    result = lifecycle.result_file(
        services().db, services().settings, job_id, owner, index, signed, request.headers.get("Range")
    )
    return views.result_response(result)


@operator.route("/history", methods=["GET"])
def get_job_history() -> Response:
    """Every recorded change of one job, oldest first: status, stop request, removal and why it ended.

    The database records each change, whichever engine made it. Signed by the Provider over
    owner + jobId + nonce, as GET /compute. To try it here, run
    `operator-service sign --owner <owner> --job-id <jobId> --key <Provider key>` and paste the nonce
    and providerSignature it prints (see the top of the page).
    ---
    tags: [operation]
    parameters:
      - {in: query, name: owner, type: string, maxLength: 255, required: true, description: consumer address, x-example: "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"}
      - {in: query, name: jobId, type: string, maxLength: 255, required: true, description: the job (part of the signed message), x-example: "0f4c9c0d1b2e4a6f8e7d6c5b4a392817"}
      - {in: query, name: providerSignature, type: string, maxLength: 1024, required: true, description: "signature of owner + jobId + nonce, as operator-service sign prints it", x-example: "0x4368eda6800747977cd69b00c1aadcd7439b7c2321b242e38cf441d46c98ec54621acfd00232402d7427fa2ed0144cc7d66c308f64e60449ac1909dbe937693300"}
      - {in: query, name: nonce, type: string, maxLength: 100, required: true, description: the nonce that was signed, x-example: "1764633600000000000"}
    responses:
      200:
        description: "Array of changes, oldest first: time, changedBy, status, statusText, stopreq, removed, dateFinished, endReason, endReasonText, exitCode"
        schema: {$ref: "#/definitions/JobHistory"}
      400: {description: "payload seems empty., \\"jobId\\" is required in the call to GET:/history, Failed to recover address", schema: {$ref: "#/definitions/Error"}}
      401: {description: "Provider not allowed, or nonce replayed / too old", schema: {$ref: "#/definitions/Error"}}
      404: {description: "No job <jobId> of owner <owner> (or, with signatures required, of another provider)", schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: Database unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    data = check_required(["owner", "jobId", "providerSignature", "nonce"], request_data(), "GET:/history")
    owner, job_id = str(data["owner"]), str(data["jobId"])
    signed = verify_signature(services().settings, data["providerSignature"], owner, job_id, data["nonce"])
    return json_response(lifecycle.job_history(services().db, services().settings, job_id, owner, signed))


def _index(value: Any) -> int:
    if isinstance(value, (bool, float)):
        raise ApiError(f"Error getResult: index must be an integer, got {value!r}", 400)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(f"Error getResult: invalid literal for int() with base 10: {str(value)[:64]!r}", 400) from None


@operator.route("/environments", methods=["GET"])
def get_environments() -> Response:
    """The compute environments announced by engines, filtered by chainId.
    ---
    tags: [operation]
    parameters:
      - {in: query, name: chainId, type: integer, description: only environments that allow this chain, x-example: 8996}
    responses:
      200:
        description: "Array of environment documents (id, cpuNumber, ramGB, diskGB, maxJobs, currentJobs, ..., lastSeen)"
        schema: {$ref: "#/definitions/Environments"}
      400: {description: "Parameters that are not valid (a body that is not JSON, say)", schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: Database unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    data = request_data()
    chain_id = data.get("chainId") if isinstance(data, dict) else None
    return json_response(environments.announced(services().db, chain_id))
