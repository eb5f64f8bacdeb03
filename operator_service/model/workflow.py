"""The compute workflow a job runs, as the Provider sends it and every engine reads it.

A workflow is `{"stages": [stage]}` (one stage only, as in Ocean). A stage has:

- `input`: the datasets, each `{index, id, url}` (url: one URL or a list) or, from a
  Provider, `{index, id, remote: {txId, serviceId, userdata?}}`;
- `algorithm`: `{id, rawcode, url | remote, container: {entrypoint, image, tag, checksum},
  algocustomdata?}`;
- `compute`: `{Instances, namespace, maxtime}`;
- `output`: `{metadataUri, ...}`.

The service checks a submitted workflow once (`check_workflow`, with the original's error
texts). Everything else reads it through `Stage` and `JobDocument`, which never fail on a
malformed document: a part that is missing or of the wrong type reads as empty, so an
engine can always run or fail a job, never crash on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from operator_service.model import stored

DID_PREFIX = "did:op:"
RAW_ALGORITHM = "raw"  # the algoDID of an algorithm without an id
STAGE_PARTS = (("algorithm", dict), ("compute", dict), ("input", list), ("output", dict))


class WorkflowInvalid(ValueError):
    """A submitted workflow the service refuses; the message is the answer's error text."""


def check_workflow(workflow: Any) -> dict:
    """The submitted workflow if it has exactly one stage with its four parts; else WorkflowInvalid."""
    if not workflow or not isinstance(workflow, dict):
        raise WorkflowInvalid("`workflow` is required in the payload and must include workflow stages")
    stages = workflow.get("stages")
    if not stages or not isinstance(stages, list):
        raise WorkflowInvalid("Missing stages")
    if len(stages) > 1:
        raise WorkflowInvalid("Multiple stages are not supported yet")
    stage = stages[0]
    for part, kind in STAGE_PARTS:
        if not isinstance(stage, dict) or part not in stage:
            raise WorkflowInvalid(f"Missing {part} in stage 0")
        if not isinstance(stage[part], kind):
            raise WorkflowInvalid(
                f"Invalid {part} in stage 0: it must be a JSON {'object' if kind is dict else 'array'}"
            )
    return workflow


def without_prefix(did: Any) -> str:
    """A DID as the pods name its folder and list it in DIDS: without `did:op:`."""
    return str(did if did is not None else "").removeprefix(DID_PREFIX)


@dataclass(frozen=True)
class Stage:
    """Stage 0 of a workflow, read leniently."""

    raw: dict

    @classmethod
    def of(cls, workflow: Any) -> Stage:
        stages = workflow.get("stages") if isinstance(workflow, dict) else None
        first = stages[0] if isinstance(stages, list) and stages else None
        return cls(_object(first))

    @property
    def inputs(self) -> list[dict]:
        items = self.raw.get("input")
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    @property
    def algorithm(self) -> dict:
        return _object(self.raw.get("algorithm"))

    @property
    def container(self) -> dict:
        return _object(self.algorithm.get("container"))

    @property
    def compute(self) -> dict:
        return _object(self.raw.get("compute"))

    @property
    def output(self) -> dict:
        return _object(self.raw.get("output"))

    def listed_dids(self) -> tuple[Any, list]:
        """algoDID and inputDID as the status object shows them: the ids as submitted, in their
        own JSON types; "raw" for an algorithm without an id."""
        algorithm = self.raw.get("algorithm")
        algo_did = algorithm.get("id", RAW_ALGORITHM) if isinstance(algorithm, dict) else RAW_ALGORITHM
        return algo_did, [item["id"] for item in self.inputs if "id" in item]

    def input_dids(self) -> list[str]:
        """The DIDS the algorithm pod gets: every input's id without `did:op:`."""
        return [without_prefix(item.get("id", "")) for item in self.inputs]

    def max_time(self) -> float | None:
        """compute.maxtime in seconds, when it is a positive number."""
        value = self.compute.get("maxtime")
        if not isinstance(value, (int, float, str)):
            return None
        try:
            seconds = float(value)
        except ValueError:
            return None
        return seconds if seconds > 0 else None


@dataclass(frozen=True)
class JobDocument:
    """A job's document, as stored in jobs.workflow (and, with a cluster, as its WorkFlow):
    `{apiVersion, kind, metadata: {name, namespace, labels, secret}, spec: {metadata: workflow}}`."""

    raw: dict

    @classmethod
    def parse(cls, text: str | None) -> JobDocument:
        """The stored document; an empty one when it is missing or unreadable."""
        try:
            return cls(_object(stored.loads(text or "")))
        except ValueError:
            return cls({})

    @property
    def workflow(self) -> Any:
        return _object(self.raw.get("spec")).get("metadata")

    @property
    def stage(self) -> Stage:
        return Stage.of(self.workflow)

    @property
    def secret(self) -> str:
        """The job's random secret, which the algorithm gets as `secret`."""
        return str(_object(self.raw.get("metadata")).get("secret") or "")


def _object(value: Any) -> dict:
    return value if isinstance(value, dict) else {}
