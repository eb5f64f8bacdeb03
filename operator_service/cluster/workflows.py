"""The WorkFlow custom resource: its name in the API, and the body of one job's resource.

Group `oceanprotocol.com`, version `v1alpha`, plural `workflows`, kind `WorkFlow`,
namespaced: the namespace is the job's environment. `workflow_body` is a pure function
of the job, tested on its own; the same document is stored in jobs.workflow, where the
engines read it (model/workflow.py, JobDocument).
"""

from __future__ import annotations

from typing import Any

GROUP = "oceanprotocol.com"
VERSION = "v1alpha"
PLURAL = "workflows"
KIND = "WorkFlow"
STOP_ANNOTATION = "oceanprotocol.com/stop-requested"


def workflow_body(job_id: str, namespace: str, workflow: Any, secret: str) -> dict:
    """The WorkFlow resource of a job: named after it, labelled `workflow=<jobId>` (the label
    the engines give the job's pods too), with the submitted workflow as `spec.metadata` and
    the job's secret, which the algorithm gets, in `metadata.secret`."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": job_id, "namespace": namespace, "labels": {"workflow": job_id}, "secret": secret},
        "spec": {"metadata": workflow},
    }
