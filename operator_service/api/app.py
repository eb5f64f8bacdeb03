"""The application factory: `create_app` builds the Flask app of the API with its resources.

It starts nothing in the background: the reconciler is a process of its own
(`operator-service reconcile`, domain/reconciler.py).
"""

from __future__ import annotations

import logging

from flasgger import Swagger
from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from flask_swagger_ui import get_swaggerui_blueprint

from operator_service import __version__
from operator_service.api.admin_auth import ADMIN_HEADER
from operator_service.api.context import EXTENSION_KEY, Services, services
from operator_service.api.errors import json_response, register_error_handlers
from operator_service.api.observability import RequestJournal
from operator_service.api.observability import install as observe_requests
from operator_service.api.routes.admin import admin
from operator_service.api.routes.health import health
from operator_service.api.routes.metrics import metrics
from operator_service.api.routes.operator import operator
from operator_service.api.schemas import DEFINITIONS
from operator_service.cluster import client as kube
from operator_service.config import Settings, load_settings
from operator_service.domain.monitoring import UnfinishedJobs
from operator_service.logging_setup import setup_logging
from operator_service.store.pool import Database

log = logging.getLogger(__name__)

BASE_URL = "/api/v1/operator"
DOCS_URL = "/api/v1/docs"
MAX_REQUEST_BYTES = 1024 * 1024
ADMIN_SCHEME = "Admin"  # the security scheme the admin routes' docstrings name


def create_app(settings: Settings | None = None, cluster: kube.Cluster | None = None) -> Flask:
    """Build the app. Without `cluster`, one is found as KUBERNETES says (auto|on|off)."""
    settings = settings or load_settings()
    setup_logging(settings.logging, batched=True)
    if cluster is None:
        cluster = kube.connect(settings.kubernetes)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    json_provider = app.json
    assert isinstance(json_provider, DefaultJSONProvider)  # Flask's own, which sorts keys when asked
    json_provider.sort_keys = True
    db = Database(settings.postgres, max_connections=settings.db_pool_size)
    current = Services(settings=settings, db=db, cluster=cluster)
    app.extensions[EXTENSION_KEY] = current
    current.journal = RequestJournal(metrics=settings.metrics, access_lines=settings.access_log)
    observe_requests(app, current.journal)
    if settings.metrics:
        current.unfinished_jobs = UnfinishedJobs(settings.postgres)
        app.register_blueprint(metrics)
    app.register_blueprint(operator, url_prefix=BASE_URL)
    app.register_blueprint(admin, url_prefix=BASE_URL)
    app.register_blueprint(health)
    app.register_blueprint(get_swaggerui_blueprint(DOCS_URL, "../../../spec", config={"app_name": "Operator service"}))
    _Swagger(app, config=_swagger_config(), template=_swagger_template(), merge=True)
    register_error_handlers(app)
    app.add_url_rule("/", "version", version)
    _allow_cross_origin(app, settings.cors_origins)
    log.info("operator-service %s, Kubernetes %s", __version__, current.kubernetes_mode)
    if not settings.signature_required:
        log.warning(
            "Provider signatures are NOT enforced (SIGNATURE_REQUIRED=0): anyone who can reach this service"
            " can read, stop and delete any owner's jobs. Set SIGNATURE_REQUIRED=1 and ALLOWED_PROVIDERS."
        )
    return app


def _allow_cross_origin(app: Flask, origins: tuple[str, ...]) -> None:
    """CORS on every route, as the original had it (Flask-Cors): any origin, or those CORS_ORIGINS lists."""
    if origins == ("*",):
        CORS(app, origins="*", send_wildcard=True)
    elif origins:
        CORS(app, origins=list(origins))


def version() -> Response:
    """Software, version and operator information. The Provider reads it; it is not a probe (see /livez, /readyz).
    ---
    tags: [service]
    responses:
      200:
        description: "software, version, address, algoTimeLimit, storageExpiry, kubernetes, signatures"
        schema: {$ref: "#/definitions/ServiceInfo"}
    """
    current = services()
    return json_response(
        {
            "address": current.settings.operator_address,
            "algoTimeLimit": current.settings.algo_pod_timeout,
            "kubernetes": current.kubernetes_mode,
            "signatures": current.signatures,
            "software": "Operator service",
            "storageExpiry": current.settings.storage_expiry,
            "version": __version__,
        }
    )


class _Swagger(Swagger):
    """flasgger without its after-request hook, which only adds the configured headers (none)
    and would run on every request."""

    def add_headers(self, app: Flask) -> None:
        return None


def _swagger_config() -> dict:
    return {
        "headers": [],
        "specs": [
            {
                "endpoint": "spec",
                "route": "/spec",
                "rule_filter": lambda rule: True,
                "model_filter": lambda tag: True,
            }
        ],
        "static_url_path": "/flasgger_static",
        "swagger_ui": False,
        "specs_route": "/apidocs/",
    }


# The top of the API docs' page: how a person calls the routes that need credentials.
DOCS_DESCRIPTION = """Infrastructure Operator Micro-service: the Compute-to-Data API the Ocean Provider calls.

**Admin routes** (`pgsqlinit`, `list`, `info`, `logs`) need the `Admin` header: press **Authorize**
and give one of `ALLOWED_ADMINS` (`make run` sets `myAdminSecret` when it is unset).

**Signed routes** (`/compute`, `/getResult`) need what the Provider sends: a `nonce` and a
`providerSignature` over owner + jobId + nonce (jobId only when the request names one). Make
them on the command line, with the Provider's private key, and paste both into the form:

    operator-service sign --owner <owner> --job-id <jobId> --key <64 hex digits>

(`.venv/bin/operator-service` in a checkout; leave out `--job-id` for `POST /compute`). It
prints the owner, jobId, a fresh nonce and the signature. Any key is accepted while
`SIGNATURE_REQUIRED=0`; with `SIGNATURE_REQUIRED=1`, only the keys of `ALLOWED_PROVIDERS`,
and each nonce once. The examples are signed by a test key over an old nonce: they work as
they are only while signatures are not enforced."""


def _swagger_template() -> dict:
    return {
        "swagger": "2.0",
        "info": {"title": "Operator service", "version": __version__, "description": DOCS_DESCRIPTION},
        "securityDefinitions": {
            ADMIN_SCHEME: {
                "type": "apiKey",
                "in": "header",
                "name": ADMIN_HEADER,
                "description": "one of ALLOWED_ADMINS, for the admin routes",
            }
        },
        "definitions": DEFINITIONS,
    }
