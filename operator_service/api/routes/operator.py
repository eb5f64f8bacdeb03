"""The routes the Ocean Provider calls, under /api/v1/operator.

Each route translates HTTP into calls on the data layer, the signature layer, the
registration protocol and the cluster module, and back. The YAML after `---` in each
docstring is the route's Swagger documentation.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Blueprint, Response, request

from operator_service.api import views as job_views
from operator_service.domain import results, signatures
from operator_service.api.context import services
from operator_service.api.errors import ApiError, json_response
from operator_service.cluster.client import GROUP, KIND, VERSION
from operator_service.domain.lifecycle import NewJob, deliver_stop_annotations, register_job
from operator_service.api.params import check_required, job_filter, request_data, text_field
from operator_service.store import environments, jobs
from operator_service.store.nonces import NonceRefused

operator = Blueprint("operator", __name__)

STAGE_PARTS = (("algorithm", dict), ("compute", dict), ("input", list), ("output", dict))


def _statuses(filters: jobs.JobFilter) -> Response:
    rows = jobs.job_statuses(services().db, filters)
    return json_response([job_views.status_object(row) for row in rows])


def _check_environment(environment: Any, chain_id: Any) -> str:
    """The environment id, if an engine announced it and it allows this chain."""
    if isinstance(environment, str):
        status_text = environments.environment_status(services().db, environment)
        document = job_views.environment_object(environment, status_text, None) if status_text else None
        if document is not None and job_views.chain_allowed(document, chain_id):
            return environment
    raise ApiError("Environment invalid or does not exist", 400)


def _check_stages(workflow: dict) -> None:
    stages = workflow.get("stages")
    if not stages or not isinstance(stages, list):
        raise ApiError("Missing stages", 400)
    if len(stages) > 1:
        raise ApiError("Multiple stages are not supported yet", 400)
    stage = stages[0]
    for part, kind in STAGE_PARTS:
        if not isinstance(stage, dict) or part not in stage:
            raise ApiError(f"Missing {part} in stage 0", 400)
        if not isinstance(stage[part], kind):
            raise ApiError(f"Invalid {part} in stage 0: it must be a JSON {'object' if kind is dict else 'array'}", 400)


def _job_document(job_id: str, namespace: str, workflow: dict) -> dict:
    """The WorkFlow body (original-api.md §6.2), stored in jobs.workflow and in the cluster."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": job_id,
            "namespace": namespace,
            "labels": {"workflow": job_id},
            "secret": uuid.uuid4().hex,
        },
        "spec": {"metadata": workflow},
    }


@operator.route("/compute", methods=["POST"])
def start_compute_job() -> Response:
    """Create a compute job: registered in Postgres (status 1) and, with a cluster, as a WorkFlow.
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
            providerSignature: {type: string, maxLength: 1024, description: "Provider signature of owner + nonce"}
            environment: {type: string, maxLength: 255, description: compute environment id (engine namespace)}
            nonce: {type: string, maxLength: 100, description: "time-based nonce (s, ms, us or ns); each used once"}
            chainId: {type: integer, description: copied into workflow.chainId}
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
    workflow = data["workflow"]
    if not workflow or not isinstance(workflow, dict):
        raise ApiError("`workflow` is required in the payload and must include workflow stages", 400)
    owner = text_field(data, "owner")
    workflow["chainId"] = data.get("chainId")
    environment = _check_environment(data["environment"], data.get("chainId"))
    claim = signatures.check_provider(services().settings, data["providerSignature"], owner, data["nonce"])
    _check_stages(workflow)
    job_id = uuid.uuid4().hex
    document = _job_document(job_id, environment, workflow)
    agreement_id = str(data["agreementId"])
    algo_did, input_dids = job_views.storable_dids(workflow)
    new_job = NewJob(
        job_id=job_id,
        agreement_id=agreement_id,
        owner=owner,
        namespace=environment,
        claim=claim,
        document=document,
        document_json=json.dumps(document),
        algo_did=algo_did,
        input_dids=input_dids,
    )
    try:
        row = register_job(services().db, services().cluster, new_job)
    except jobs.DuplicateAgreement:
        raise ApiError("`agreementId` already in use for other job.", 400) from None
    except NonceRefused:
        raise signatures.nonce_refused(claim) from None
    return json_response([job_views.status_object(row)])


@operator.route("/compute", methods=["PUT"])
def stop_compute_job() -> Response:
    """Request a stop: stopreq=1 on the matching jobs, and an annotation on their WorkFlows.

    An annotation the cluster did not take is retried by the reconciler until it lands
    (and by a repeated PUT): the stop is recorded either way, and the 503 says so.
    ---
    tags: [operation]
    parameters:
      - {in: query, name: owner, type: string, maxLength: 255, required: true, description: consumer address}
      - {in: query, name: providerSignature, type: string, maxLength: 1024, required: true, description: "signature of owner + jobId + nonce"}
      - {in: query, name: nonce, type: string, maxLength: 100, required: true}
      - {in: query, name: jobId, type: string, maxLength: 255}
      - {in: query, name: agreementId, type: string, maxLength: 255}
    responses:
      200: {description: Array of status objects of the matching jobs, schema: {$ref: "#/definitions/StatusObjects"}}
      400: {description: "payload seems empty., \\"owner\\" is required in the call to PUT:/compute, Failed to recover address", schema: {$ref: "#/definitions/Error"}}
      401: {description: "Provider not allowed, or nonce replayed / too old", schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: "Database or Kubernetes unavailable (a recorded stop's annotation is retried until it lands)", schema: {$ref: "#/definitions/Error"}}
    """
    filters = _signed_job_filter("PUT:/compute")
    cluster = services().cluster
    stopped = jobs.request_stop(services().db, filters, annotate=cluster is not None)
    if cluster is not None:
        deliver_stop_annotations(services().db, cluster, stopped)
    return _statuses(filters)


@operator.route("/compute", methods=["DELETE"])
def delete_compute_job() -> Response:
    """Delete jobs: their WorkFlows are deleted, removed=1, and a stop is requested if still running.
    ---
    tags: [operation]
    parameters:
      - {in: query, name: owner, type: string, maxLength: 255, required: true, description: consumer address}
      - {in: query, name: providerSignature, type: string, maxLength: 1024, required: true, description: "signature of owner + jobId + nonce"}
      - {in: query, name: nonce, type: string, maxLength: 100, required: true}
      - {in: query, name: jobId, type: string, maxLength: 255}
      - {in: query, name: agreementId, type: string, maxLength: 255}
    responses:
      200: {description: Array of status objects of the deleted jobs, schema: {$ref: "#/definitions/StatusObjects"}}
      400: {description: Invalid request, schema: {$ref: "#/definitions/Error"}}
      401: {description: "Provider not allowed, or nonce replayed / too old", schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
      503: {description: Database or Kubernetes unavailable, schema: {$ref: "#/definitions/Error"}}
    """
    filters = _signed_job_filter("DELETE:/compute")
    removed = jobs.mark_removed(services().db, filters)
    cluster = services().cluster
    if cluster is not None:
        for job_id, namespace in removed:
            cluster.delete_workflow(namespace, job_id)
    return _statuses(filters)


@operator.route("/compute", methods=["GET"])
def get_compute_job_status() -> Response:
    """Status of the jobs matching agreementId, jobId and owner (AND-ed), newest first.
    ---
    tags: [operation]
    parameters:
      - {in: query, name: owner, type: string, maxLength: 255, description: consumer address}
      - {in: query, name: jobId, type: string, maxLength: 255}
      - {in: query, name: agreementId, type: string, maxLength: 255}
      - {in: query, name: providerSignature, type: string, maxLength: 1024, required: true, description: "signature of owner + jobId + nonce"}
      - {in: query, name: nonce, type: string, maxLength: 100, required: true}
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
    current = services()
    claim = signatures.check_provider(
        current.settings, data.get("providerSignature"), _signed_prefix(filters), data["nonce"]
    )
    rows = jobs.claim_and_read_statuses(current.db, filters, claim)
    if rows is None:
        raise signatures.nonce_refused(claim)
    return json_response([job_views.status_object(row) for row in rows])


def _signed_job_filter(call: str) -> jobs.JobFilter:
    """The filters of a signed PUT or DELETE, once its signature and nonce are accepted."""
    data = check_required(["owner", "providerSignature", "nonce"], request_data(), call)
    filters = job_filter(data)
    signatures.verify_provider(
        services().db, services().settings, data["providerSignature"], _signed_prefix(filters), data["nonce"]
    )
    return filters


def _signed_prefix(filters: jobs.JobFilter) -> str:
    return signatures.message_prefix(filters.owner, filters.job_id)


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
    rows = jobs.running_jobs(services().db)
    return json_response([job_views.running_object(row) for row in rows])


@operator.route("/getResult", methods=["GET"])
def get_result() -> Response:
    """Stream one result file of a job (index into its outputs, logs included).
    ---
    tags: [operation]
    produces: [application/octet-stream, application/json, "*/*"]
    parameters:
      - {in: query, name: index, type: integer, required: true}
      - {in: query, name: jobId, type: string, maxLength: 255, required: true}
      - {in: query, name: owner, type: string, maxLength: 255, required: true}
      - {in: query, name: providerSignature, type: string, maxLength: 1024, required: true, description: "signature of owner + jobId + nonce"}
      - {in: query, name: nonce, type: string, maxLength: 100, required: true}
      - {in: header, name: Range, type: string, description: forwarded to the storage}
    responses:
      200: {description: The file, schema: {type: file}}
      206: {description: "Part of the file (with Range)", schema: {type: file}}
      400: {description: "Invalid request", schema: {$ref: "#/definitions/Error"}}
      401: {description: "Provider not allowed, or nonce replayed / too old", schema: {$ref: "#/definitions/Error"}}
      403: {description: "The stored result is not served: outside RESULT_URL_PREFIXES or RESULTS_DIR, another scheme, or a URL that cannot be used", schema: {$ref: "#/definitions/Error"}}
      404: {description: "No results for job <jobId>, Negative index, No such index, owner or provider mismatch, the result file does not exist", schema: {$ref: "#/definitions/Error"}}
      413: {description: Body over 1 MiB, schema: {$ref: "#/definitions/Error"}}
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
    provider = signatures.verify_provider(
        services().db, services().settings, data["providerSignature"], owner + job_id, data["nonce"]
    )
    index = _index(data["index"])
    outputs = _outputs_for(job_id, owner, provider)
    if index < 0:
        raise ApiError(f"Negative index {index}", 404)
    if index >= len(outputs):
        raise ApiError(f"No such index {index} in this compute job", 404)
    entry = outputs[index]
    url = entry.get("url") if isinstance(entry, dict) else None
    if not isinstance(url, str) or not url:
        raise ApiError(f"No results for job {job_id}", 404)
    return results.stream_result(url, services().settings, request.headers.get("Range"))


def _index(value: Any) -> int:
    if isinstance(value, bool) or isinstance(value, float):
        raise ApiError(f"Error getResult: index must be an integer, got {value!r}", 400)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(f"Error getResult: invalid literal for int() with base 10: {str(value)[:64]!r}", 400) from None


def _outputs_for(job_id: str, owner: str, provider: str) -> list:
    source = jobs.result_source(services().db, job_id)
    if source is None:
        raise ApiError(f"No results for job {job_id}", 404)
    job_owner, job_provider, outputs_url = source
    if (job_owner or "").lower() != owner.lower():
        raise ApiError(f"Owner {owner} mismatch for job {job_id}", 404)
    if services().settings.signature_required and (job_provider or "").lower() != provider:
        raise ApiError(f"Provider {provider} mismatch for job {job_id}", 404)
    outputs = job_views.parse_outputs(outputs_url)
    if not outputs:
        raise ApiError(f"No results for job {job_id}", 404)
    return outputs


@operator.route("/environments", methods=["GET"])
def get_environments() -> Response:
    """The compute environments announced by engines, filtered by chainId.
    ---
    tags: [operation]
    parameters:
      - {in: query, name: chainId, type: integer, description: only environments that allow this chain}
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
    found = []
    for namespace, status_text, lastping in environments.list_environments(services().db):
        document = job_views.environment_object(namespace, status_text, lastping)
        if document is not None and job_views.chain_allowed(document, chain_id):
            found.append(document)
    return json_response(found)
