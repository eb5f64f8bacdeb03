"""The signed GET /compute cut back step by step, to show where its cost goes.

`gunicorn bench.ladder:app` serves the service itself (the same app, blueprints, URL and
query string, the same database), except that GET /compute does only the first steps of
the real route, as BENCH_LADDER_STEP says:

- `route`: answers `[]` at once: what Flask and gunicorn cost for this request;
- `signature`: + reads the parameters and recovers and checks the Provider's signature;
- `read`: + reads the job with the route's indexed statement and answers its status
  object, without recording the nonce (so replays would pass: never serve this).

The full route (scenario `get`) also records the nonce, in the same statement as the read.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from flask import Response

from operator_service.api import views
from operator_service.api.context import services
from operator_service.api.errors import json_response
from operator_service.api.params import job_filter, request_data
from operator_service.domain import signatures
from operator_service.run import app
from operator_service.store import jobs

ENDPOINT = "operator.get_compute_job_status"


def route_only() -> Response:
    return json_response([])


def _checked_filters() -> jobs.JobFilter:
    data = request_data()
    filters = job_filter(data)
    signatures.verify_signature(
        services().settings, data["providerSignature"], filters.owner, filters.job_id, data["nonce"]
    )
    return filters


def signature_checked() -> Response:
    _checked_filters()
    return json_response([])


def read_without_nonce() -> Response:
    rows = jobs.job_statuses(services().db, _checked_filters())
    return json_response([views.status_object(row) for row in rows])


STEPS: dict[str, Callable[[], Response]] = {
    "route": route_only,
    "signature": signature_checked,
    "read": read_without_nonce,
}

app.view_functions[ENDPOINT] = STEPS[os.environ["BENCH_LADDER_STEP"]]
