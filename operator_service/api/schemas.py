"""The response schemas of the Swagger spec (`definitions`), referenced by the routes' docstrings.

They describe what the routes answer, so that a client (or the fuzz test) can check every
answer against them. Swagger 2.0 has no "one of": `results` (an array, or "" while a job
has no outputs) and `algoDID` (whatever the workflow held) are left without a type.
"""

from __future__ import annotations

NULLABLE_TEXT = {"type": "string", "x-nullable": True}
NULLABLE_INTEGER = {"type": "integer", "x-nullable": True}
ENDING_KEYS = ["endReason", "endReasonText", "exitCode"]
ENDING_DESCRIPTION = (
    "why the job ended, null while it runs: finished, algorithm-failed, killed-for-memory, timed-out,"
    " stopped-by-request, provisioning-failed, engine-restarted, algorithm-not-started or unknown"
)
ENDING_PROPERTIES = {
    "endReason": {**NULLABLE_TEXT, "description": ENDING_DESCRIPTION},
    "endReasonText": {**NULLABLE_TEXT, "description": "why the job ended, in a sentence"},
    "exitCode": {**NULLABLE_INTEGER, "description": "the algorithm's exit code, when it exited"},
}
JOB_KEYS = ["jobId", "agreementId", "owner", "environment", "status", "statusText", "stopreq", "removed"]
JOB_PROPERTIES = {
    "jobId": {"type": "string"},
    "agreementId": {"type": "string"},
    "owner": NULLABLE_TEXT,
    "environment": NULLABLE_TEXT,
    "status": NULLABLE_INTEGER,
    "statusText": NULLABLE_TEXT,
    "stopreq": NULLABLE_INTEGER,
    "removed": NULLABLE_INTEGER,
    "dateCreated": {**NULLABLE_TEXT, "description": "epoch seconds (UTC)"},
    "dateFinished": {**NULLABLE_TEXT, "description": "epoch seconds (UTC), null while running"},
    **ENDING_PROPERTIES,
}
HISTORY_ENTRY = {
    "type": "object",
    "required": [
        "time",
        "changedBy",
        "status",
        "statusText",
        "stopreq",
        "removed",
        "dateFinished",
        "dateResultsExpired",
        *ENDING_KEYS,
    ],
    "properties": {
        "time": {"type": "string", "description": "when the change was made: epoch seconds (UTC)"},
        "changedBy": {
            **NULLABLE_TEXT,
            "description": "the writer's application_name: operator-service, operator-engine <environment>, or"
            " what another engine sets (null when none)",
        },
        "status": NULLABLE_INTEGER,
        "statusText": NULLABLE_TEXT,
        "stopreq": NULLABLE_INTEGER,
        "removed": NULLABLE_INTEGER,
        "dateFinished": {**NULLABLE_TEXT, "description": "epoch seconds (UTC), null while running"},
        "dateResultsExpired": {**NULLABLE_TEXT, "description": "epoch seconds (UTC): results deleted"},
        **ENDING_PROPERTIES,
    },
}

DEFINITIONS: dict[str, dict] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "what went wrong"}},
    },
    "ServiceInfo": {
        "type": "object",
        "required": ["software", "version", "address", "algoTimeLimit", "storageExpiry", "kubernetes", "signatures"],
        "properties": {
            "software": {"type": "string"},
            "version": {"type": "string"},
            "address": NULLABLE_TEXT,
            "algoTimeLimit": NULLABLE_TEXT,
            "storageExpiry": NULLABLE_TEXT,
            "kubernetes": {"type": "string", "description": "KUBERNETES and what it resolved to"},
            "signatures": {"type": "string", "description": "whether Provider signatures are enforced"},
        },
    },
    "Liveness": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["alive"]}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "schemaVersion", "kubernetes"],
        "properties": {
            "status": {"type": "string", "enum": ["ready"]},
            "schemaVersion": {"type": "integer"},
            "kubernetes": {"type": "string", "description": "where the cluster comes from, or 'not used'"},
        },
    },
    "NotReady": {
        "type": "object",
        "required": ["error", "schemaVersion", "kubernetes"],
        "properties": {
            "error": {"type": "string"},
            "schemaVersion": NULLABLE_INTEGER,
            "kubernetes": {"type": "string"},
        },
    },
    "StatusObject": {
        "type": "object",
        "required": [
            "agreementId",
            "jobId",
            "owner",
            "status",
            "statusText",
            "dateCreated",
            "dateFinished",
            "results",
            "stopreq",
            "removed",
            "algoDID",
            "inputDID",
            *ENDING_KEYS,
            "dateResultsExpired",
        ],
        "properties": {
            "agreementId": {"type": "string"},
            "jobId": {"type": "string"},
            "owner": NULLABLE_TEXT,
            "status": NULLABLE_INTEGER,
            "statusText": NULLABLE_TEXT,
            "dateCreated": {**NULLABLE_TEXT, "description": "epoch seconds (UTC)"},
            "dateFinished": {**NULLABLE_TEXT, "description": "epoch seconds (UTC), null while running"},
            "results": {"description": 'the job\'s files without their URLs: an array, or "" while there are none'},
            "stopreq": NULLABLE_INTEGER,
            "removed": NULLABLE_INTEGER,
            "algoDID": {"description": "the algorithm's DID, or raw"},
            "inputDID": {"type": "array"},
            **ENDING_PROPERTIES,
            "dateResultsExpired": {
                **NULLABLE_TEXT,
                "description": "epoch seconds (UTC) when the engine deleted the results (STORAGE_EXPIRY after"
                ' dateFinished), null while they are kept; each entry of results then has "expired": true and'
                " getResult answers 410",
            },
        },
    },
    "StatusObjects": {"type": "array", "items": {"$ref": "#/definitions/StatusObject"}},
    "RunningJobs": {
        "type": "array",
        "items": {
            "type": "object",
            "required": [
                "agreementId",
                "jobId",
                "owner",
                "status",
                "statusText",
                "dateCreated",
                "namespace",
                "algoDID",
                "inputDID",
            ],
            "properties": {
                "agreementId": {"type": "string"},
                "jobId": {"type": "string"},
                "owner": NULLABLE_TEXT,
                "status": NULLABLE_INTEGER,
                "statusText": NULLABLE_TEXT,
                "dateCreated": NULLABLE_TEXT,
                "namespace": NULLABLE_TEXT,
                "algoDID": {"description": "the algorithm's DID, or raw"},
                "inputDID": {"type": "array"},
            },
        },
    },
    "Environments": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["id", "lastSeen"],
            "properties": {"id": {"type": "string"}, "lastSeen": NULLABLE_TEXT},
            "description": "the document an engine announced (cpuNumber, ramGB, maxJobs, ...), with id and lastSeen",
        },
    },
    "SchemaVersion": {
        "type": "object",
        "required": ["version", "applied"],
        "properties": {
            "version": {"type": "integer"},
            "applied": {"type": "array", "items": {"type": "integer"}},
            "duplicateRunningAgreements": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["agreementId", "jobIds"],
                    "properties": {
                        "agreementId": {"type": "string"},
                        "jobIds": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "JobHistory": {"type": "array", "items": HISTORY_ENTRY},
    "JobSummaries": {
        "type": "array",
        "items": {
            "type": "object",
            "required": [*JOB_KEYS, "dateCreated", "dateFinished", *ENDING_KEYS],
            "properties": JOB_PROPERTIES,
        },
    },
    "JobRecord": {
        "type": "object",
        "required": [
            *JOB_KEYS,
            "dateCreated",
            "dateFinished",
            *ENDING_KEYS,
            "provider",
            "chainId",
            "lastStatusUpdate",
            "results",
            "dateResultsExpired",
            "algoDID",
            "inputDID",
            "history",
        ],
        "properties": {
            **JOB_PROPERTIES,
            "provider": NULLABLE_TEXT,
            "chainId": NULLABLE_TEXT,
            "lastStatusUpdate": {**NULLABLE_TEXT, "description": "epoch seconds (UTC)"},
            "results": {"type": "array", "description": "the job's files as its engine published them, URLs included"},
            "dateResultsExpired": {**NULLABLE_TEXT, "description": "epoch seconds (UTC) when the engine deleted them"},
            "algoDID": {"description": "the algorithm's DID, or raw"},
            "inputDID": {"type": "array"},
            "history": {"type": "array", "items": HISTORY_ENTRY},
        },
    },
    "WorkflowNames": {"type": "array", "items": {"type": "string"}},
    "Workflow": {"type": "object", "description": "the WorkFlow custom resource, as the cluster holds it"},
}
