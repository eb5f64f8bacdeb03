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


# JSON read back from the database (written by engines) deeper than this is treated as
# unreadable: the answers that would carry it could not be serialised.
MAX_STORED_DEPTH = 64


def epoch_text(value: Optional[Decimal | float]) -> Optional[str]:
    return None if value is None else str(value)


def deeper_than(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests more than `limit` levels of arrays and objects."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _stored_json(text: str) -> Any:
    """JSON an engine stored; ValueError if it is not JSON or too deep to answer with."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deep") from None
    if deeper_than(value, MAX_STORED_DEPTH):
        raise ValueError("nested too deep")
    return value


def parse_outputs(outputs_url: Optional[str]) -> Optional[list]:
    """The outputsURL array pod-publishing wrote, or None when there is none (or it is unreadable)."""
    if not outputs_url or len(outputs_url) <= 2:
        return None
    try:
        outputs = _stored_json(outputs_url)
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


def workflow_dids(workflow: Any) -> tuple[Any, list]:
    """algoDID ("raw" when the algorithm has no id key) and the input DIDs of stage 0."""
    try:
        stage = workflow["stages"][0]
        algorithm = stage.get("algorithm") or {}
        inputs = stage.get("input") or []
    except (KeyError, IndexError, TypeError, AttributeError):
        return "raw", []
    algo_did = algorithm.get("id", "raw") if isinstance(algorithm, dict) else "raw"
    input_dids = [item["id"] for item in inputs if isinstance(item, dict) and "id" in item]
    return algo_did, input_dids


def storable_dids(workflow: Any) -> tuple[Optional[str], Optional[list[str]]]:
    """The DIDs for the algoDID/inputDIDs columns; (None, None) unless all are text, so that
    the status object is then built from the document, with the DIDs' own JSON types."""
    algo_did, input_dids = workflow_dids(workflow)
    if isinstance(algo_did, str) and all(isinstance(did, str) for did in input_dids):
        return algo_did, input_dids
    return None, None


def _row_dids(algo_did: Optional[str], input_dids: Optional[list], legacy_workflow: Optional[str]) -> tuple[str, list]:
    """The stored DIDs, or those parsed from the document of a row written before they were stored."""
    if algo_did is not None:
        return algo_did, input_dids or []
    try:
        workflow = _stored_json(legacy_workflow or "")["spec"]["metadata"]
    except (ValueError, KeyError, TypeError):
        return "raw", []
    return workflow_dids(workflow)


def status_object(row: tuple) -> dict[str, Any]:
    """A row of jobs.STATUS_COLUMNS as the status object of GET/POST/PUT /compute."""
    (agreement_id, job_id, owner, status, status_text, created, finished,
     outputs_url, stopreq, removed, *dids) = row
    algo_did, input_dids = _row_dids(*dids)
    return {
        "agreementId": agreement_id,
        "jobId": job_id,
        "owner": owner,
        "status": status,
        "statusText": status_text,
        "dateCreated": created,
        "dateFinished": finished,
        "results": public_results(outputs_url),
        "stopreq": stopreq,
        "removed": removed,
        "algoDID": algo_did,
        "inputDID": input_dids,
    }


def running_object(row: tuple) -> dict[str, Any]:
    """A row of jobs.RUNNING_COLUMNS as the object of GET /runningjobs."""
    agreement_id, job_id, owner, status, status_text, created, namespace, *dids = row
    algo_did, input_dids = _row_dids(*dids)
    return {
        "agreementId": agreement_id,
        "jobId": job_id,
        "owner": owner,
        "status": status,
        "statusText": status_text,
        "dateCreated": created,
        "namespace": namespace,
        "algoDID": algo_did,
        "inputDID": input_dids,
    }


def environment_object(namespace: str, status_text: Optional[str], lastping: Any) -> Optional[dict]:
    """The announced document plus `lastSeen` and `id`; None if the engine wrote no JSON object."""
    try:
        document = _stored_json(status_text or "")
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
