"""The compute environments the engines announce, and the choice of one for a new job.

An engine announces its environment by calling announce(), which stores a JSON document
per namespace (its id) with `lastping`. An environment may list the chains it serves in
`allowedChainId`; one that lists none serves every chain.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from operator_service.domain.errors import InvalidRequest
from operator_service.model import stored
from operator_service.store import environments
from operator_service.store.pool import Database

log = logging.getLogger(__name__)


def environment_document(namespace: str, status_text: str | None, lastping: Decimal | None) -> dict | None:
    """The announced document plus `lastSeen` (epoch seconds, as text) and `id`; None if the
    engine wrote no JSON object."""
    try:
        document = stored.loads(status_text or "")
    except ValueError:
        log.warning("environment %s announced a status that is not JSON", namespace)
        return None
    if not isinstance(document, dict):
        return None
    document["lastSeen"] = None if lastping is None else str(lastping)
    document["id"] = namespace
    return document


def chain_allowed(document: dict, chain_id: Any) -> bool:
    """False only when the environment lists allowed chains and chain_id is not one of them."""
    allowed = document.get("allowedChainId")
    if not isinstance(allowed, list) or not allowed:
        return True
    return str(chain_id) in {str(item) for item in allowed}


def announced(db: Database, chain_id: Any) -> list[dict]:
    """Every announced environment that serves `chain_id` (every one when it is None)."""
    found = []
    for namespace, status_text, lastping in environments.list_environments(db):
        document = environment_document(namespace, status_text, lastping)
        if document is not None and chain_allowed(document, chain_id):
            found.append(document)
    return found


def check_environment(db: Database, environment: Any, chain_id: Any) -> str:
    """The environment id, if an engine announced it and it serves this chain."""
    if isinstance(environment, str):
        status_text = environments.environment_status(db, environment)
        document = environment_document(environment, status_text, None) if status_text else None
        if document is not None and chain_allowed(document, chain_id):
            return environment
    raise InvalidRequest("Environment invalid or does not exist")


def workflow_namespaces(db: Database, default_namespace: str) -> list[str]:
    """Where WorkFlows can live: every announced environment and the default namespace."""
    return sorted({default_namespace, *environments.environment_namespaces(db)})
