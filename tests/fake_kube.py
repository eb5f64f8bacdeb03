"""A stateful fake Kubernetes API server over real HTTP, and the pytest fixtures that start it.

The official `kubernetes` client, unmodified, talks to it through a kubeconfig
(`write_kubeconfig`). It serves what operator-service uses: WorkFlow custom objects
(oceanprotocol.com/v1alpha, namespaced, as in k8s/base/crd-workflow.yaml), pods, pod logs, /version and
minimal discovery. It answers like the real API server where that matters to a client:
`kind: Status` error bodies with the HTTP code, reason and details; 201 on create, 409 AlreadyExists,
422 Invalid for a bad name/label/apiVersion/kind, 415 for strategic-merge or apply patches on a
custom resource; a bearer token is required (401 without it; /version is public, as in a real
cluster); a global resourceVersion bumped on every write; unknown top-level and metadata fields
pruned on write. Not modelled: watches, set-based label selectors (`in`, `notin`: 400), field
selectors, paging, finalizers, the status subresource.

Test controls: `inject_fault` answers with an error instead of handling the request;
`fail_after` handles it, then answers with an error (the work is done, the reply is lost);
`inject_delay` sleeps before handling; `hold` handles only once the test releases it. `down()` closes the
listening socket and every open
connection, so clients get "connection refused" as from a dead server; `up()` listens again on
the same port with the same objects.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

# The resource as k8s/base/crd-workflow.yaml defines it; kept here on purpose instead of imported from
# operator_service.cluster.client, so that a wrong constant there fails against this server.
GROUP = "oceanprotocol.com"
VERSION = "v1alpha"
PLURAL = "workflows"
KIND = "WorkFlow"
API_VERSION = f"{GROUP}/{VERSION}"

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")
_OBJECT_META = ("name", "generateName", "namespace", "labels", "annotations", "finalizers", "ownerReferences")
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An error answer, sent as a `kind: Status` body with the same HTTP code."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason or _REASONS.get(code, "Unknown"),
            "details": details or {},
            "code": code,
        }


@dataclass(frozen=True)
class Request:
    """One request as the fake received it (query values: the last one given)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class _Rule:
    kind: str  # "fault", "fail_after", "delay" or "hold"
    method: str
    pattern: re.Pattern[str]
    remaining: int | None  # None: forever
    status: int = 500
    seconds: float = 0.0
    release: threading.Event | None = None

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and bool(self.pattern.search(path))


@dataclass
class _Answer:
    code: int
    body: Any
    content_type: str = "application/json"


class FakeKubernetes:
    """The fake API server: start(), use `.url` or `write_kubeconfig()`, stop()."""

    def __init__(self, token: str = "fake-token-for-tests") -> None:
        self.token = token
        self.request_log: list[Request] = []
        self._workflows: dict[tuple[str, str], dict] = {}
        self._pods: dict[tuple[str, str], tuple[dict, str]] = {}
        self._rules: list[_Rule] = []
        self._resource_version = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._generation = 0  # bumped by down(): requests delayed across it are dropped
        self._wake = threading.Event()
        self._port = 0

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> FakeKubernetes:
        self._listen()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.down()

    def down(self) -> None:
        """Refuse connections: close the listening socket and every open connection."""
        assert self._server is not None and self._thread is not None, "the fake is not running"
        with self._lock:
            self._generation += 1
            connections = list(self._connections)
        self._wake.set()
        self._server.shutdown()
        self._server.server_close()
        for connection in connections:
            _close_quietly(connection)
        self._thread.join()
        self._server = self._thread = None

    def up(self) -> None:
        """Listen again on the same port, with the same objects."""
        assert self._server is None, "the fake is already running"
        self._wake.clear()
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def write_kubeconfig(self, path: str | os.PathLike[str], token: str | None = None) -> str:
        """Write a kubeconfig for this server and return its path.

        Its user has this server's bearer token, or `token` to test a rejected one.
        """
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(kubeconfig, handle)
        return os.fspath(path)

    # --- state and inspection ------------------------------------------------------------------
    def add_pod(self, namespace: str, name: str, labels: dict[str, str], log_text: str = "") -> dict:
        """Add a running pod whose log is `log_text`."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"containers": [{"name": "workflow-executor", "image": "busybox"}]},
            "status": {"phase": "Running"},
        }
        with self._lock:
            self._stamp(pod)
            self._pods[(namespace, name)] = (pod, log_text)
        return copy.deepcopy(pod)

    def objects(self, namespace: str | None = None) -> list[dict]:
        """The WorkFlows stored now, in one namespace or all, ordered by namespace and name."""
        with self._lock:
            return [copy.deepcopy(obj) for (ns, _), obj in sorted(self._workflows.items()) if namespace in (None, ns)]

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request received, in order; `request_log` has the details."""
        with self._lock:
            return [(request.method, request.path) for request in self.request_log]

    def count(self, method: str, path_regex: str) -> int:
        """How many requests with this method had a path matching `path_regex` (re.search)."""
        return sum(1 for m, path in self.requests if m == method and re.search(path_regex, path))

    # --- fault injection -----------------------------------------------------------------------
    def inject_fault(self, method: str, path_regex: str, status: int = 500, times: int | None = 1) -> None:
        """Answer the next `times` matching requests (None: all) with a Status error, unhandled.

        `method` "*" matches any method; `path_regex` is searched in the path (no query string).
        The Status names no object (empty details), like an error that is not about one object.
        """
        self._add_rule(_Rule("fault", method, re.compile(path_regex), times, status=status))

    def fail_after(self, method: str, path_regex: str, status: int = 500, times: int | None = 1) -> None:
        """Handle the next `times` matching requests, then answer with a Status error instead."""
        self._add_rule(_Rule("fail_after", method, re.compile(path_regex), times, status=status))

    def inject_delay(self, method: str, path_regex: str, seconds: float, times: int | None = 1) -> None:
        """Sleep `seconds` before handling the next `times` matching requests."""
        self._add_rule(_Rule("delay", method, re.compile(path_regex), times, seconds=seconds))

    def hold(self, method: str, path_regex: str, release: threading.Event, times: int | None = 1) -> None:
        """Handle the next `times` matching requests only once `release` is set (at most 60 s later)."""
        self._add_rule(_Rule("hold", method, re.compile(path_regex), times, release=release))

    def _add_rule(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _take_rule(self, kind: str, method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.kind == kind and rule.remaining != 0 and rule.matches(method, path):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None

    # --- serving -------------------------------------------------------------------------------
    def _listen(self) -> None:
        self._server = _Server(("127.0.0.1", self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def _answer(self, request: Request, authorization: str | None) -> _Answer | None:
        """The answer to one request; None to drop the connection without one."""
        with self._lock:
            self.request_log.append(request)
            generation = self._generation
        delay = self._take_rule("delay", request.method, request.path)
        if delay is not None and (self._wake.wait(delay.seconds) or generation != self._generation):
            return None
        held = self._take_rule("hold", request.method, request.path)
        if held is not None and held.release is not None:
            held.release.wait(60)
        fault = self._take_rule("fault", request.method, request.path)
        if fault is not None:
            return _error(ApiError(fault.status, f"injected fault: {fault.status}"))
        try:
            answer = self._route(request, authorization)
        except ApiError as exc:
            answer = _error(exc)
        late = self._take_rule("fail_after", request.method, request.path)
        if late is not None:
            return _error(ApiError(late.status, f"injected failure after handling: {late.status}"))
        return answer

    def _route(self, request: Request, authorization: str | None) -> _Answer:
        if request.path in ("/version", "/version/"):  # the client asks for /version/
            return _Answer(200, _VERSION_INFO)
        if authorization != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized")
        for pattern, handler in _ROUTES:
            match = pattern.fullmatch(request.path)
            if match:
                args = [unquote(part) for part in match.groups()]
                return handler(self, request, *args)
        raise ApiError(404, "the server could not find the requested resource")

    # --- resources -----------------------------------------------------------------------------
    def _discovery(self, request: Request) -> _Answer:
        _allow(request, "GET")
        documents = {
            "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_API_GROUP]},
            f"/apis/{GROUP}": {"kind": "APIGroup", "apiVersion": "v1", **_API_GROUP},
            f"/apis/{API_VERSION}": _API_RESOURCES,
        }
        return _Answer(200, documents[request.path])

    def _workflow_collection(self, request: Request, namespace: str | None = None) -> _Answer:
        if request.method == "POST" and namespace is not None:
            return _Answer(201, self._create(namespace, request.body))
        _allow(request, "GET")
        matches = _selector(request.query.get("labelSelector", ""))
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self._workflows.items())
                if namespace in (None, ns) and matches(obj["metadata"].get("labels", {}))
            ]
            return _Answer(200, self._list(API_VERSION, f"{KIND}List", items))

    def _workflow(self, request: Request, namespace: str, name: str) -> _Answer:
        _allow(request, "GET", "PATCH", "DELETE")
        with self._lock:
            current = self._workflows.get((namespace, name))
            if current is None:
                raise _not_found(PLURAL, name, GROUP)
            if request.method == "PATCH":
                return _Answer(200, self._patch(current, request))
            if request.method == "DELETE":
                del self._workflows[(namespace, name)]
                self._bump()
                details = {"name": name, "group": GROUP, "kind": PLURAL, "uid": current["metadata"]["uid"]}
                return _Answer(
                    200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
                )
            return _Answer(200, copy.deepcopy(current))

    def _create(self, namespace: str, body: Any) -> dict:
        obj = _pruned(body)
        metadata = obj["metadata"]
        if metadata.setdefault("namespace", namespace) != namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
        _validate(obj)
        with self._lock:
            if (namespace, metadata["name"]) in self._workflows:
                raise ApiError(
                    409,
                    f'{PLURAL}.{GROUP} "{metadata["name"]}" already exists',
                    "AlreadyExists",
                    {"name": metadata["name"], "group": GROUP, "kind": PLURAL},
                )
            self._stamp(obj)
            self._workflows[(namespace, metadata["name"])] = obj
            return copy.deepcopy(obj)

    def _patch(self, current: dict, request: Request) -> dict:
        """Apply a merge or JSON patch to a stored WorkFlow (the caller holds the lock)."""
        if request.content_type == MERGE_PATCH:
            updated = _merge_patch(copy.deepcopy(current), request.body)
        elif request.content_type == JSON_PATCH:
            updated = _json_patch(copy.deepcopy(current), request.body)
        else:
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media "
                f"types include: {JSON_PATCH}, {MERGE_PATCH}, application/apply-patch+yaml",
            )
        expected = updated["metadata"].get("resourceVersion")
        if expected != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "the object has been modified; please apply your changes to the latest version and try again",
                details={"name": current["metadata"]["name"]},
            )
        updated = _pruned(updated)
        for kept in ("name", "namespace", "uid", "creationTimestamp", "generation"):
            updated["metadata"][kept] = current["metadata"][kept]
        _validate(updated)
        if {k: v for k, v in updated.items() if k != "metadata"} != {
            k: v for k, v in current.items() if k != "metadata"
        }:
            updated["metadata"]["generation"] += 1
        updated["metadata"]["resourceVersion"] = self._bump()
        current.clear()
        current.update(updated)
        return copy.deepcopy(current)

    def _pod_collection(self, request: Request, namespace: str) -> _Answer:
        _allow(request, "GET")
        matches = _selector(request.query.get("labelSelector", ""))
        with self._lock:
            items = [
                copy.deepcopy(pod)
                for (ns, _), (pod, _log) in sorted(self._pods.items())
                if ns == namespace and matches(pod["metadata"]["labels"])
            ]
            return _Answer(200, self._list("v1", "PodList", items))

    def _pod(self, request: Request, namespace: str, name: str) -> _Answer:
        _allow(request, "GET")
        return _Answer(200, copy.deepcopy(self._find_pod(namespace, name)[0]))

    def _pod_log(self, request: Request, namespace: str, name: str) -> _Answer:
        _allow(request, "GET")
        text = self._find_pod(namespace, name)[1]
        limit = request.query.get("limitBytes")
        data = text.encode("utf-8")
        if limit is not None:
            if not limit.isdigit() or int(limit) < 1:
                raise ApiError(400, f"invalid limitBytes {limit!r}: must be greater than 0")
            data = data[: int(limit)]
        return _Answer(200, data, "text/plain")

    def _find_pod(self, namespace: str, name: str) -> tuple[dict, str]:
        with self._lock:
            found = self._pods.get((namespace, name))
        if found is None:
            raise _not_found("pods", name)
        return found

    def _list(self, api_version: str, kind: str, items: list[dict]) -> dict:
        metadata = {"resourceVersion": str(self._resource_version)}
        return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items}

    def _bump(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _stamp(self, obj: dict) -> None:
        """Give a new object the fields the server sets (the caller holds the lock)."""
        obj["metadata"].update(
            uid=str(uuid.uuid4()),
            creationTimestamp=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            resourceVersion=self._bump(),
            generation=1,
        )


_VERSION_INFO = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-fake",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2024-04-17T00:00:00Z",
    "goVersion": "go1.22.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_API_GROUP = {
    "name": GROUP,
    "versions": [{"groupVersion": API_VERSION, "version": VERSION}],
    "preferredVersion": {"groupVersion": API_VERSION, "version": VERSION},
}
_API_RESOURCES = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": API_VERSION,
    "resources": [
        {
            "name": PLURAL,
            "singularName": "workflow",
            "namespaced": True,
            "kind": KIND,
            "shortNames": ["wf"],
            "verbs": ["create", "delete", "get", "list", "patch"],
        }
    ],
}
_NS = r"/namespaces/([^/]+)"
_ROUTES: list[tuple[re.Pattern[str], Callable[..., _Answer]]] = [
    (re.compile(f"/api|/apis|/apis/{re.escape(GROUP)}(?:/{VERSION})?"), FakeKubernetes._discovery),
    (re.compile(f"/apis/{re.escape(API_VERSION)}/{PLURAL}"), FakeKubernetes._workflow_collection),
    (re.compile(f"/apis/{re.escape(API_VERSION)}{_NS}/{PLURAL}"), FakeKubernetes._workflow_collection),
    (re.compile(f"/apis/{re.escape(API_VERSION)}{_NS}/{PLURAL}/([^/]+)"), FakeKubernetes._workflow),
    (re.compile(f"/api/v1{_NS}/pods"), FakeKubernetes._pod_collection),
    (re.compile(f"/api/v1{_NS}/pods/([^/]+)"), FakeKubernetes._pod),
    (re.compile(f"/api/v1{_NS}/pods/([^/]+)/log"), FakeKubernetes._pod_log),
]


def _allow(request: Request, *methods: str) -> None:
    if request.method not in methods:
        raise ApiError(405, "the server does not allow this method on the requested resource")


def _not_found(kind: str, name: str, group: str = "") -> ApiError:
    resource = f"{kind}.{group}" if group else kind
    details = {"name": name, "kind": kind, **({"group": group} if group else {})}
    return ApiError(404, f'{resource} "{name}" not found', details=details)


def _error(exc: ApiError) -> _Answer:
    return _Answer(exc.code, exc.body)


def _pruned(body: Any) -> dict:
    """The object as stored: unknown top-level and metadata fields dropped, as the server does."""
    if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
        raise ApiError(400, "the object provided is not a JSON object with a metadata object")
    obj = {key: copy.deepcopy(body[key]) for key in _TOP_LEVEL if key in body}
    metadata = obj.setdefault("metadata", {})
    obj["metadata"] = {
        key: value
        for key, value in metadata.items()
        if key in (*_OBJECT_META, "uid", "creationTimestamp", "resourceVersion", "generation")
    }
    return obj


def _validate(obj: dict) -> None:
    """422 Invalid for what the real server rejects in a WorkFlow we might send."""
    metadata = obj["metadata"]
    name = metadata.get("name")
    causes = []
    if obj.get("apiVersion") != API_VERSION:
        causes.append(("apiVersion", f"must be {API_VERSION}"))
    if obj.get("kind") != KIND:
        causes.append(("kind", f"must be {KIND}"))
    if not isinstance(name, str) or not name:
        causes.append(("metadata.name", "name or generateName is required"))
    elif len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        causes.append(("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain'))
    causes += _label_causes(metadata.get("labels", {}))
    annotations = metadata.get("annotations", {})
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        causes.append(("metadata.annotations", "values must be strings"))
    if causes:
        message = "; ".join(f"{field}: {text}" for field, text in causes)
        details = {
            "name": name if isinstance(name, str) else "",
            "group": GROUP,
            "kind": KIND,
            "causes": [{"reason": "FieldValueInvalid", "field": f, "message": t} for f, t in causes],
        }
        raise ApiError(422, f'{KIND}.{GROUP} "{name}" is invalid: {message}', details=details)


def _label_causes(labels: Any) -> list[tuple[str, str]]:
    if not isinstance(labels, dict):
        return [("metadata.labels", "must be a map of strings")]
    return [
        ("metadata.labels", f"Invalid value: {key!r}: {value!r}")
        for key, value in labels.items()
        if not (
            isinstance(value, str) and len(value) <= 63 and _LABEL_VALUE.fullmatch(value) and _LABEL_KEY.fullmatch(key)
        )
    ]


def _selector(text: str) -> Callable[[dict[str, str]], bool]:
    """A label selector: `a=b`, `a==b`, `a!=b`, `a` (exists), `!a` (absent), joined by commas."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        equality = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*([^=!\s,]*)", part)
        absence = re.fullmatch(r"!\s*([^=!\s]+)", part)
        if equality and _LABEL_KEY.fullmatch(equality[1]) and _LABEL_VALUE.fullmatch(equality[3]):
            key, operator, value = equality.groups()
            negate = operator == "!="
            tests.append(lambda labels, k=key, v=value, n=negate: (labels.get(k) == v) != n)
        elif absence and _LABEL_KEY.fullmatch(absence[1]):
            tests.append(lambda labels, k=absence[1]: k not in labels)
        elif _LABEL_KEY.fullmatch(part):
            tests.append(lambda labels, k=part: k in labels)
        else:
            raise ApiError(400, f"unable to parse requirement: {part!r}")
    return lambda labels: all(test(labels) for test in tests)


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _json_patch(target: dict, operations: Any) -> dict:
    """RFC 6902 JSON patch: add, replace, remove and test."""
    if not isinstance(operations, list):
        raise ApiError(400, "a JSON patch must be a list of operations")
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        node: Any = target
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.get(part)
            if node is None:
                raise ApiError(422, f"jsonpatch: missing path {operation['path']}")
        op = operation["op"]
        if op == "test" and node.get(last) != operation["value"]:
            raise ApiError(422, f"jsonpatch: test failed at {operation['path']}")
        if op == "remove":
            node.pop(last)
        elif op in ("add", "replace"):
            node[last] = copy.deepcopy(operation["value"])
        elif op != "test":
            raise ApiError(422, f"jsonpatch: unsupported operation {op!r}")
    return target


def _close_quietly(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], fake: FakeKubernetes) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up in DNS, which can stall in a sandbox.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    disable_nagle_algorithm = True  # else headers and body, written apart, wait on delayed ACKs
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            pass  # the client went away (e.g. it timed out) or down() closed the connection

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_GET

    def _serve(self) -> None:
        url = urlsplit(self.path)
        try:
            request = Request(
                method=self.command,
                path=url.path,
                query={k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
                content_type=(self.headers.get("Content-Type") or "").split(";")[0].strip(),
                body=self._read_body(),
            )
        except ValueError:
            self._send(_error(ApiError(400, "the request body is not valid JSON")))
            return
        answer = self.server.fake._answer(request, self.headers.get("Authorization"))
        if answer is None:
            self.close_connection = True
        else:
            self._send(answer)

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw.strip() else None

    def _send(self, answer: _Answer) -> None:
        data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        self.send_response(answer.code)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_kube() -> Iterator[FakeKubernetes]:
    """A started FakeKubernetes, stopped after the test."""
    fake = FakeKubernetes().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def kubeconfig(fake_kube: FakeKubernetes, tmp_path: Any) -> str:
    """The path of a kubeconfig (in tmp_path) for `fake_kube`."""
    return fake_kube.write_kubeconfig(tmp_path / "kubeconfig")
