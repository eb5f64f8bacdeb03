"""The answers the routes send, built from database rows and opened results.

Key order and value types are the original's: epochs are strings, `results` drops the
URLs and is "" for a job without outputs; algoDID and inputDID come from their columns,
or from the job document for rows written before those columns existed. The status object
adds, after the original's keys, why the job ended (endReason, endReasonText, exitCode), then
`dateResultsExpired`: when the engine deleted the job's results (epoch seconds, null while
they are kept); each of its `results` then also says `"expired": true`.
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any
from urllib.parse import quote

from flask import Response

from operator_service.domain.results import ResultFile
from operator_service.model import stored
from operator_service.model.ending import ending_fields, ending_of
from operator_service.model.workflow import JobDocument

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What may stand in the plain filename= of Content-Disposition: printable ASCII but the
# characters that would end or escape the value.
_UNSAFE_IN_FILENAME = re.compile(r'[^\x20-\x7e]|["\\;,]')


def public_results(outputs_url: str | None, expired: bool = False) -> Any:
    """The job's files without their URLs; each also says `"expired": true` once they were deleted."""
    outputs = stored.outputs(outputs_url)
    if outputs is None:
        return ""
    mark = {"expired": True} if expired else {}
    return [
        {**{key: value for key, value in item.items() if key != "url"}, **mark} if isinstance(item, dict) else item
        for item in outputs
    ]


def _row_dids(algo_did: str | None, input_dids: list | None, legacy_document: str | None) -> tuple[Any, list]:
    """The stored DIDs, or those of the document of a row written before they were stored."""
    if algo_did is not None:
        return algo_did, input_dids or []
    return JobDocument.parse(legacy_document).stage.listed_dids()


def status_object(row: tuple) -> dict[str, Any]:
    """A row of jobs.STATUS_COLUMNS as the status object of GET/POST/PUT /compute."""
    (agreement_id, job_id, owner, status, status_text, created, finished, outputs_url, stopreq, removed, *rest) = row
    ending_columns, results_expired, dids = rest[:3], rest[3], rest[4:]
    algo_did, input_dids = _row_dids(*dids)
    ending = ending_of(status, stopreq, finished is not None, *ending_columns)
    return {
        "agreementId": agreement_id,
        "jobId": job_id,
        "owner": owner,
        "status": status,
        "statusText": status_text,
        "dateCreated": created,
        "dateFinished": finished,
        "results": public_results(outputs_url, expired=results_expired is not None),
        "stopreq": stopreq,
        "removed": removed,
        "algoDID": algo_did,
        "inputDID": input_dids,
        **ending_fields(ending),
        "dateResultsExpired": results_expired,
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


def result_response(result: ResultFile) -> Response:
    """The download of a result: the storage's answer to a Range as it came (with the Range
    header), else an attachment named after the file, with a type guessed from its name (for a
    part of a local file, 206 with its Content-Range)."""
    if result.range_header:
        return Response(result.body, status=result.status, headers={"Range": result.range_header})
    filename, content_type = result.filename, result.content_type
    has_extension = "." in filename
    if has_extension and not content_type:
        content_type = mimetypes.guess_type(filename)[0]
    elif not has_extension and content_type:
        filename += mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
    response = Response(
        result.body,
        status=result.status,
        content_type=content_type or "application/octet-stream",
        headers={
            "Content-Disposition": content_disposition(filename),
            "Access-Control-Expose-Headers": "Content-Disposition",
        },
    )
    if result.length is not None:
        response.headers["Content-Length"] = str(result.length)
    if result.content_range:
        response.headers["Content-Range"] = result.content_range
    if result.accepts_ranges:
        response.headers["Accept-Ranges"] = "bytes"
    return response


def content_disposition(filename: str) -> str:
    """`attachment;filename=<name>` as the original sent it, with a name that is safe in a header.

    The name comes from storage (the URL, or the storage's own Content-Disposition): control
    characters (CR, LF) would split the header, quotes and semicolons would end the value.
    They become "_"; a name that is not plain ASCII also goes whole in filename* (RFC 6266).
    """
    plain = _UNSAFE_IN_FILENAME.sub("_", filename) or "result"
    if plain == filename or _CONTROL.search(filename):
        return f"attachment;filename={plain}"
    return f"attachment;filename={plain};filename*=UTF-8''{quote(filename, safe='')}"
