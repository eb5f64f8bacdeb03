"""The JSON objects the routes answer with, built from database rows.

Key order and value types are the original's (original-api.md §2.10): epochs are strings,
`results` drops the URLs and is "" for a job without outputs.
"""
from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any, Optional

log = logging.getLogger(__name__)


def epoch_text(value: Optional[Decimal | float]) -> Optional[str]:
    return None if value is None else str(value)


def parse_outputs(outputs_url: Optional[str]) -> Optional[list]:
    """The outputsURL array pod-publishing wrote, or None when there is none (or it is unreadable)."""
    if not outputs_url or len(outputs_url) <= 2:
        return None
    try:
        outputs = json.loads(outputs_url)
    except ValueError:
        log.warning("ignoring an outputsURL that is not JSON")
        return None
    return outputs if isinstance(outputs, list) else None


def public_results(outputs_url: Optional[str]) -> Any:
    outputs = parse_outputs(outputs_url)
    if outputs is None:
        return ""
    return [
        {key: value for key, value in item.items() if key != "url"} if isinstance(item, dict) else item
        for item in outputs
    ]


def stage_dids(document_text: Optional[str]) -> tuple[str, list[str]]:
    """algoDID ("raw" when the algorithm has no id key) and the input DIDs of stage 0."""
    try:
        stage = json.loads(document_text or "")["spec"]["metadata"]["stages"][0]
        algorithm = stage.get("algorithm") or {}
        inputs = stage.get("input") or []
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "raw", []
    algo_did = algorithm.get("id", "raw") if isinstance(algorithm, dict) else "raw"
    input_dids = [item["id"] for item in inputs if isinstance(item, dict) and "id" in item]
    return algo_did, input_dids


def status_object(row: tuple) -> dict[str, Any]:
    """A row of jobs.STATUS_COLUMNS as the status object of GET/POST/PUT /compute."""
    (agreement_id, job_id, owner, status, status_text, created, finished,
     outputs_url, stopreq, removed, document) = row
    algo_did, input_dids = stage_dids(document)
    return {
        "agreementId": agreement_id,
        "jobId": job_id,
        "owner": owner,
        "status": status,
        "statusText": status_text,
        "dateCreated": epoch_text(created),
        "dateFinished": epoch_text(finished),
        "results": public_results(outputs_url),
        "stopreq": stopreq,
        "removed": removed,
        "algoDID": algo_did,
        "inputDID": input_dids,
    }


def running_object(row: tuple) -> dict[str, Any]:
    """A row of jobs.RUNNING_COLUMNS as the object of GET /runningjobs."""
    agreement_id, job_id, owner, status, status_text, created, namespace, document = row
    algo_did, input_dids = stage_dids(document)
    return {
        "agreementId": agreement_id,
        "jobId": job_id,
        "owner": owner,
        "status": status,
        "statusText": status_text,
        "dateCreated": epoch_text(created),
        "namespace": namespace,
        "algoDID": algo_did,
        "inputDID": input_dids,
    }


def environment_object(namespace: str, status_text: Optional[str], lastping: Any) -> Optional[dict]:
    """The announced document plus `lastSeen` and `id`; None if the engine wrote no JSON object."""
    try:
        document = json.loads(status_text or "")
    except ValueError:
        log.warning("environment %s announced a status that is not JSON", namespace)
        return None
    if not isinstance(document, dict):
        return None
    document["lastSeen"] = epoch_text(lastping)
    document["id"] = namespace
    return document


def chain_allowed(document: dict, chain_id: Any) -> bool:
    """False only when the environment lists allowed chains and chain_id is not one of them."""
    allowed = document.get("allowedChainId")
    if not isinstance(allowed, list) or not allowed:
        return True
    return str(chain_id) in {str(item) for item in allowed}
