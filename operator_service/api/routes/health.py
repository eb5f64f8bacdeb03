"""The probes: /livez (the process answers) and /readyz (it can serve requests). No credentials."""

from __future__ import annotations

from flask import Blueprint, Response

from operator_service.api.context import services
from operator_service.api.errors import json_response

health = Blueprint("health", __name__)


@health.route("/livez", methods=["GET"])
def liveness() -> Response:
    """Liveness: the process answers HTTP. Touches no dependency, so a database or cluster outage never restarts it.
    ---
    tags: [service]
    responses:
      200:
        description: The process is alive
        schema: {$ref: "#/definitions/Liveness"}
    """
    return json_response({"status": "alive"})


@health.route("/readyz", methods=["GET"])
def readiness() -> Response:
    """Readiness: the database answers with the schema this version needs and, when a cluster is used, the cluster answers.
    ---
    tags: [service]
    responses:
      200:
        description: Ready to serve requests
        schema: {$ref: "#/definitions/Readiness"}
      503:
        description: Not ready; `error` names the dependency and what is wrong
        schema: {$ref: "#/definitions/NotReady"}
    """
    current = services()
    state = current.readiness.get(current.db, current.cluster)
    body = {"schemaVersion": state.schema_version, "kubernetes": state.kubernetes}
    if state.ready:
        return json_response({"status": "ready", **body})
    return json_response({"error": state.problem, **body}, 503)
