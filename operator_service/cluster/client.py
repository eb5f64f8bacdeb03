"""The service's only door to Kubernetes: WorkFlow custom resources and the pods of their stages.

Every call has a timeout. Idempotent calls (get, list, patch, delete, log reads) are retried a few
times on connection errors, timeouts, 429 and 5xx answers; a create is never repeated blindly (see
`Cluster.create_workflow`). "The object does not exist" is an answer (None/False); every other
failure becomes `KubernetesUnavailable`, which the routes turn into a 503 naming Kubernetes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import TypeVar, cast

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from operator_service.cluster.workflows import GROUP, KIND, PLURAL, VERSION

log = logging.getLogger(__name__)

KUBERNETES_MODES = ("auto", "on", "off")  # the values of KUBERNETES: see connect()


#: Every RBAC verb the calls below need, by resource (workflows in GROUP, pods in the core group).
#: k8s/base/rbac.yaml grants exactly these; the tests compare it with the Role and with the requests
#: the calls really make, so a new call without a matching grant fails a test.
RBAC_VERBS: dict[str, frozenset[str]] = {
    "workflows": frozenset({"create", "get", "list", "patch", "delete"}),
    "pods": frozenset({"list"}),
    "pods/log": frozenset({"get"}),
}

#: The API server cuts a pod log after this many bytes, so one admin request stays bounded.
LOG_LIMIT_BYTES = 10 * 1024 * 1024

#: Pauses before the first and every later retry of an idempotent call.
BACKOFF_SECONDS = (0.2, 0.5)
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_Result = TypeVar("_Result")


class KubernetesUnavailable(Exception):
    """The cluster could not do what was asked: unreachable, too slow, refused (401/403) or failed."""


class _NotFound(Exception):
    """A 404 naming the object: an answer, not a failure. The callers, which expect absence,
    turn it into None/False; it never leaves this module.

    `retried` is True when an earlier attempt got no usable answer: that attempt may have done
    the work (a delete whose reply was lost), so the object's absence is not news.
    """

    def __init__(self, message: str, retried: bool) -> None:
        super().__init__(message)
        self.retried = retried


class Cluster:
    """One Kubernetes API server, reached through an ApiClient built for it alone."""

    def __init__(
        self,
        api_client: client.ApiClient,
        source: str,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: tuple[float, ...] = BACKOFF_SECONDS,
    ) -> None:
        self.source = source
        self._api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._version = client.VersionApi(api_client)
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff

    def create_workflow(self, body: dict) -> dict:
        """Create the WorkFlow `body` describes; calling again with the same body is safe.

        POST is not idempotent, so it is never repeated. The name is the job id, so a 409 means an
        earlier attempt for this job created it: that object is returned. After a timeout or a 5xx
        the object may exist or not (the reply may be what was lost), so one GET decides.
        """
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        what = f"create {KIND} {name} in {namespace}"
        try:
            created = self._custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, _request_timeout=self._timeout
            )
            return cast(dict, created)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            if not (_is_conflict(exc) or _is_transient(exc)):
                raise self._unavailable(what, exc) from exc
            failure = exc
        existing = self.get_workflow(namespace, name)
        if existing is None:
            raise self._unavailable(what, failure) from failure
        return existing

    def get_workflow(self, namespace: str, name: str) -> dict | None:
        """The WorkFlow, or None if it does not exist."""
        try:
            found = self._call(
                f"get {KIND} {name} in {namespace}",
                lambda: self._custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=self._timeout
                ),
            )
        except _NotFound:
            return None
        return cast(dict, found)

    def list_workflows(self, namespace: str, label_selector: str | None = None) -> list[dict]:
        """The WorkFlows of a namespace, optionally filtered by a label selector like `workflow=<id>`."""
        found = self._call(
            f"list {KIND}s in {namespace}",
            lambda: self._custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                label_selector=label_selector,
                _request_timeout=self._timeout,
            ),
        )
        return cast(dict, found)["items"]

    def annotate_workflow(self, namespace: str, name: str, annotations: dict[str, str]) -> bool:
        """Merge `annotations` into the WorkFlow's; False if it does not exist."""
        patch = {"metadata": {"annotations": annotations}}
        try:
            self._call(
                f"annotate {KIND} {name} in {namespace}",
                lambda: self._custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    patch,
                    _content_type="application/merge-patch+json",
                    _request_timeout=self._timeout,
                ),
            )
        except _NotFound:
            return False
        return True

    def delete_workflow(self, namespace: str, name: str) -> bool:
        """Delete the WorkFlow (its dependents in the background); False if it did not exist."""
        try:
            self._call(
                f"delete {KIND} {name} in {namespace}",
                lambda: self._custom.delete_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    propagation_policy="Background",
                    _request_timeout=self._timeout,
                ),
            )
        except _NotFound as missing:
            return missing.retried
        return True

    def find_pods(self, namespace: str, job_id: str, component: str) -> list[str]:
        """Names of the pods the engine labelled `workflow=<job_id>,component=<component>`."""
        if not (_is_label_value(job_id) and _is_label_value(component)):
            # No pod can carry such a label, and the text must not rewrite the selector.
            return []
        selector = f"workflow={job_id},component={component}"
        pods = self._call(
            f"list pods {selector} in {namespace}",
            lambda: self._core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=self._timeout),
        )
        return [pod.metadata.name for pod in pods.items if pod.metadata is not None and pod.metadata.name]

    def read_pod_log(self, namespace: str, pod: str) -> str | None:
        """The pod's log (at most LOG_LIMIT_BYTES), or None if the pod does not exist."""
        try:
            return self._call(
                f"read log of pod {pod} in {namespace}",
                lambda: self._core.read_namespaced_pod_log(
                    pod, namespace, limit_bytes=LOG_LIMIT_BYTES, _request_timeout=self._timeout
                ),
            )
        except _NotFound:
            return None

    def version(self) -> str:
        """The server's version (GET /version): a cheap call that proves the cluster answers."""
        info = self._call("GET /version", lambda: self._version.get_code(_request_timeout=self._timeout))
        return info.git_version

    def _call(self, what: str, call: Callable[[], _Result]) -> _Result:
        """Run an idempotent call, retrying transient failures with a short backoff."""
        attempt = 0
        while True:
            try:
                return call()
            except (ApiException, urllib3.exceptions.HTTPError) as exc:
                if _names_missing_object(exc):
                    raise _NotFound(self._message(what, exc), retried=attempt > 0) from exc
                if not _is_transient(exc) or attempt >= self._retries:
                    raise self._unavailable(what, exc) from exc
            time.sleep(self._backoff[min(attempt, len(self._backoff) - 1)])
            attempt += 1

    def close(self) -> None:
        """Close the client's connections (and its thread pool, if it made one)."""
        self._api_client.close()

    def _unavailable(self, what: str, exc: Exception) -> KubernetesUnavailable:
        return KubernetesUnavailable(self._message(what, exc))

    def _message(self, what: str, exc: Exception) -> str:
        return f"Kubernetes unavailable: {what} failed: {self._describe(exc)}"

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, ApiException):
            answer = f"{exc.status} {exc.reason}" if exc.status else str(exc.reason)
            message = _status(exc).get("message")
            return f"{answer}: {str(message)[:300]}" if message else answer
        if isinstance(exc, urllib3.exceptions.NewConnectionError):  # a subclass of TimeoutError
            return "cannot connect: " + str(exc).split(": ", 1)[-1]
        if isinstance(exc, urllib3.exceptions.TimeoutError):
            return f"no answer within {self._timeout:g} s"
        return f"{type(exc).__name__}: {exc}"


def connect(
    mode: str, *, timeout: float = 5.0, retries: int = 2, backoff: tuple[float, ...] = BACKOFF_SECONDS
) -> Cluster | None:
    """The cluster to use under KUBERNETES=`mode` (auto, on, off), or None to run without one.

    auto: in-cluster service account, else a kubeconfig (KUBECONFIG or ~/.kube/config); neither
    found, or one found but unusable, means None. on: the same, but a missing or unusable config,
    or a cluster that does not answer GET /version, raises KubernetesUnavailable.
    """
    if mode not in KUBERNETES_MODES:
        raise ValueError(f"Kubernetes mode must be one of {', '.join(KUBERNETES_MODES)}, got {mode!r}")
    if mode == "off":
        log.info("KUBERNETES=off: running without Kubernetes")
        return None
    try:
        found = _load_configuration()
    except KubernetesUnavailable as exc:
        if mode == "on":
            raise
        log.warning("%s; running without Kubernetes", exc)
        return None
    if found is None:
        if mode == "on":
            raise KubernetesUnavailable(
                "Kubernetes unavailable: KUBERNETES=on but there is no in-cluster service account"
                " and no kubeconfig (KUBECONFIG or ~/.kube/config)"
            )
        log.info("No in-cluster config and no kubeconfig found: running without Kubernetes")
        return None
    configuration, source = found
    cluster = Cluster(client.ApiClient(configuration), source, timeout, retries, backoff)
    if mode == "on":
        log.info("Kubernetes: using %s, server %s", source, cluster.version())
    else:
        log.info("Kubernetes: using %s", source)
    return cluster


def _load_configuration() -> tuple[client.Configuration, str] | None:
    """Client settings from the in-cluster service account, else from a kubeconfig; None if neither.

    Each call fills a fresh Configuration, never the client's global default, so that several
    Clusters can point at different servers.
    """
    configuration = client.Configuration()
    source = _load_in_cluster(configuration) or _load_kubeconfig(configuration)
    if source is None:
        return None
    # Cluster retries what is safe to retry; urllib3's own retries would multiply the attempts.
    configuration.retries = False
    return configuration, source


def _load_in_cluster(configuration: client.Configuration) -> str | None:
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        log.warning("KUBERNETES_SERVICE_HOST is set but the in-cluster config is unusable (%s)", exc)
        return None
    return "in-cluster"


def _load_kubeconfig(configuration: client.Configuration) -> str | None:
    paths = os.pathsep.join(_kubeconfig_paths())
    if not paths:
        return None
    try:
        config.load_kube_config(config_file=paths, client_configuration=configuration)
    except (ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
        raise KubernetesUnavailable(f"Kubernetes unavailable: kubeconfig {paths} is unusable: {exc}") from exc
    return f"kubeconfig:{paths}"


def _kubeconfig_paths() -> list[str]:
    """The existing files KUBECONFIG names (a path list, as for kubectl), else ~/.kube/config."""
    listed = os.environ.get("KUBECONFIG") or os.path.join("~", ".kube", "config")
    paths = (os.path.expanduser(path) for path in listed.split(os.pathsep) if path)
    return [path for path in paths if os.path.isfile(path)]


def _status(exc: ApiException) -> dict:
    """The `kind: Status` body of an error answer, or {} if it has none."""
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _names_missing_object(exc: Exception) -> bool:
    """A 404 about an object. A 404 naming nothing means the API itself (e.g. the CRD) is missing."""
    if not isinstance(exc, ApiException) or exc.status != 404:
        return False
    details = _status(exc).get("details")
    return isinstance(details, dict) and bool(details.get("name"))


def _is_label_value(text: str) -> bool:
    return len(text) <= 63 and _LABEL_VALUE.fullmatch(text) is not None


def _is_conflict(exc: Exception) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


def _is_transient(exc: Exception) -> bool:
    """No answer at all, or an answer that says "try again later"."""
    if isinstance(exc, ApiException):
        return exc.status == 429 or (exc.status or 0) >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError)
