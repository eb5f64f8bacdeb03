"""A WorkFlow as the service builds it, for the tests of the cluster and of the manifests."""

from __future__ import annotations

from operator_service.cluster import workflows

NAMESPACE = "ocean-compute"
JOB = "0123456789abcdef0123456789abcdef"

SAMPLE_WORKFLOW = {
    "stages": [
        {
            "index": 0,
            "input": [{"index": 0, "id": "did:op:1234", "remote": {"txId": "0xabc"}}],
            "algorithm": {
                "id": "did:op:algo",
                "rawcode": "print('héllo')",
                "container": {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11"},
            },
            "compute": {"Instances": 1, "maxtime": 3600},
            "output": {"metadataUri": "https://aquarius", "publishOutput": False},
        }
    ],
    "chainId": 8996,
}


def workflow_body(job_id: str = JOB, namespace: str = NAMESPACE, **labels: str) -> dict:
    """A WorkFlow as the service builds it, with extra labels."""
    body = workflows.workflow_body(job_id, namespace, SAMPLE_WORKFLOW, secret="a-job-secret")
    body["metadata"]["labels"].update(labels)
    return body
