"""The Kubernetes manifests in k8s/: what they declare, what they grant, and that they match kube.py."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from operator_service.cluster import client as kube
from operator_service.domain.results import url_allowed
from tests import fake_kube
from tests.test_kube import workflow_body

K8S = Path(__file__).resolve().parent.parent / "k8s"
SERVICE_NS = "ocean-operator"
COMPUTE_NS = "ocean-compute"
EXPECTED_KINDS = {
    "namespaces.yaml": ["Namespace", "Namespace"],
    "crd-workflow.yaml": ["CustomResourceDefinition"],
    "rbac.yaml": ["ServiceAccount", "Role", "RoleBinding"],
    "secrets.example.yaml": ["Secret", "Secret"],
    "postgres.yaml": ["ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"],
    "operator-service.yaml": ["Deployment", "Service"],
    "operator-engine.yaml": ["ServiceAccount", "Role", "RoleBinding", "Deployment"],
}
RBAC_GROUP = "rbac.authorization.k8s.io"
REFERENCES = (("secretKeyRef", "Secret", "stringData"), ("configMapKeyRef", "ConfigMap", "data"))
SECRET_LIKE = re.compile(r"PASSWORD|SECRET|PRIVATE_KEY|ADMINS|TOKEN|ACCESS_KEY|API_KEY", re.IGNORECASE)


def load(name: str) -> list[dict]:
    with open(K8S / name, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


ALL = {path.name: load(path.name) for path in sorted(K8S.glob("*.yaml"))}
DOCS = [doc for docs in ALL.values() for doc in docs]


def find(kind: str, name: str, namespace: str | None = None) -> dict:
    matches = [
        doc for doc in DOCS
        if doc["kind"] == kind and doc["metadata"]["name"] == name
        and doc["metadata"].get("namespace") == namespace
    ]
    assert len(matches) == 1, f"expected one {kind} {namespace}/{name}, found {len(matches)}"
    return matches[0]


def containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"]


def env_of(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def all_env() -> Iterator[tuple[dict, dict]]:
    for doc in DOCS:
        if doc["kind"] == "Deployment":
            for container in containers(doc):
                for entry in container.get("env", []):
                    yield doc, entry


def service_account(name: str, namespace: str) -> dict:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def granted(role: dict) -> dict[str, set[str]]:
    verbs: dict[str, set[str]] = {}
    for rule in role["rules"]:
        for resource in rule["resources"]:
            verbs.setdefault(resource, set()).update(rule["verbs"])
    return verbs


# --- shape -------------------------------------------------------------------------------------
def test_every_manifest_file_has_the_expected_kinds() -> None:
    assert {name: [doc["kind"] for doc in docs] for name, docs in ALL.items()} == EXPECTED_KINDS


def test_namespaced_objects_live_in_the_two_namespaces() -> None:
    assert {doc["metadata"]["name"] for doc in ALL["namespaces.yaml"]} == {SERVICE_NS, COMPUTE_NS}
    for doc in DOCS:
        if doc["kind"] not in ("Namespace", "CustomResourceDefinition"):
            assert doc["metadata"].get("namespace") in (SERVICE_NS, COMPUTE_NS), doc["metadata"]


def test_deployment_selectors_match_their_pods_and_services() -> None:
    for doc in DOCS:
        if doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for service in (d for d in DOCS if d["kind"] == "Service"):
        deployment = find("Deployment", service["metadata"]["name"], service["metadata"]["namespace"])
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        ports = {p["name"] for c in containers(deployment) for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


# --- the WorkFlow CRD ----------------------------------------------------------------------------
def crd() -> dict:
    return find("CustomResourceDefinition", f"{kube.PLURAL}.{kube.GROUP}")


def test_crd_defines_the_resource_kube_and_the_fake_use() -> None:
    spec = crd()["spec"]
    (version,) = spec["versions"]
    assert (spec["group"], version["name"], spec["scope"]) == (kube.GROUP, kube.VERSION, "Namespaced")
    assert version["served"] is True and version["storage"] is True
    assert spec["names"] == {"kind": kube.KIND, "listKind": f"{kube.KIND}List", "plural": kube.PLURAL,
                             "singular": "workflow", "shortNames": ["wf"]}
    assert (fake_kube.GROUP, fake_kube.VERSION, fake_kube.KIND, fake_kube.PLURAL) == (
        kube.GROUP, kube.VERSION, kube.KIND, kube.PLURAL)


def schema_errors(value: Any, schema: dict, path: str = "") -> list[str]:
    """The structural-schema checks the API server applies to what we create (type, required,
    properties, pruning of unknown fields unless x-kubernetes-preserve-unknown-fields)."""
    types = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool}
    expected = schema.get("type")
    if expected in types and not isinstance(value, types[expected]):
        return [f"{path or '.'}: not {expected}"]
    if not isinstance(value, dict):
        return []
    errors = [f"{path}.{key}: required" for key in schema.get("required", []) if key not in value]
    properties = schema.get("properties", {})
    for key, item in value.items():
        if key in properties:
            errors += schema_errors(item, properties[key], f"{path}.{key}")
        elif not schema.get("x-kubernetes-preserve-unknown-fields") and path:
            errors.append(f"{path}.{key}: would be pruned")
    return errors


def test_a_workflow_as_created_fits_the_crd() -> None:
    body = workflow_body()
    spec = crd()["spec"]
    assert body["apiVersion"] == f"{spec['group']}/{spec['versions'][0]['name']}"
    assert body["kind"] == spec["names"]["kind"]
    assert body["metadata"]["namespace"] == COMPUTE_NS  # Namespaced: every WorkFlow names one
    schema = spec["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema_errors({k: v for k, v in body.items() if k != "metadata"}, schema) == []
    without_spec = {"apiVersion": body["apiVersion"], "kind": body["kind"]}
    assert schema_errors(without_spec, schema) == [".spec: required"]


# --- RBAC ----------------------------------------------------------------------------------------
def test_operator_service_role_grants_exactly_the_verbs_kube_uses() -> None:
    role = find("Role", "operator-service", COMPUTE_NS)
    assert granted(role) == kube.RBAC_VERBS
    groups = {resource: rule["apiGroups"] for rule in role["rules"] for resource in rule["resources"]}
    assert groups == {"workflows": [kube.GROUP], "pods": [""], "pods/log": [""]}


def test_operator_service_role_is_bound_to_its_service_account() -> None:
    find("ServiceAccount", "operator-service", SERVICE_NS)
    binding = find("RoleBinding", "operator-service", COMPUTE_NS)
    assert binding["roleRef"] == {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "operator-service"}
    assert binding["subjects"] == [service_account("operator-service", SERVICE_NS)]
    deployment = find("Deployment", "operator-service", SERVICE_NS)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "operator-service"


def test_operator_engine_role_covers_only_what_the_engine_does() -> None:
    role = find("Role", "operator-engine", COMPUTE_NS)
    assert granted(role) == {"jobs": {"create", "get", "delete"},
                             "persistentvolumeclaims": {"create", "delete"},
                             "configmaps": {"create", "delete"}}
    binding = find("RoleBinding", "operator-engine", COMPUTE_NS)
    assert binding["roleRef"] == {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "operator-engine"}
    assert binding["subjects"] == [service_account("operator-engine", COMPUTE_NS)]
    deployment = find("Deployment", "operator-engine", COMPUTE_NS)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "operator-engine"


def test_nothing_is_cluster_wide_or_wildcard() -> None:
    kinds = {doc["kind"] for doc in DOCS}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    for doc in DOCS:
        assert doc.get("roleRef", {}).get("name") != "cluster-admin"
        for rule in doc.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


# --- the operator-service Deployment -------------------------------------------------------------
def service_container() -> dict:
    (container,) = containers(find("Deployment", "operator-service", SERVICE_NS))
    return container


def test_operator_service_listens_on_8050_behind_its_service() -> None:
    assert service_container()["ports"] == [{"name": "http", "containerPort": 8050}]
    service = find("Service", "operator-service", SERVICE_NS)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8050, "targetPort": "http"}]


def test_operator_service_probes_use_the_liveness_and_readiness_routes() -> None:
    container = service_container()
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_the_image_runs_the_configured_server_and_checks_readiness() -> None:
    """The image starts gunicorn through `operator-service serve` (the settings `make run` uses)."""
    dockerfile = (K8S.parent / "Dockerfile").read_text()
    assert re.search(r'^CMD \["operator-service", "serve"\]$', dockerfile, re.MULTILINE)
    healthcheck = re.search(r"^HEALTHCHECK .*\n(?:.*\n)*?.*CMD (.*)$", dockerfile, re.MULTILINE)
    assert healthcheck and "/readyz" in healthcheck.group(1)


def test_operator_service_configuration() -> None:
    env = env_of(service_container())
    assert env["KUBERNETES"]["value"] == "on"
    assert env["DEFAULT_NAMESPACE"]["value"] == COMPUTE_NS
    for name in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER"):
        assert env[name]["valueFrom"]["configMapKeyRef"] == {"name": "postgres-config", "key": name}
    for name in ("POSTGRES_PASSWORD", "ALLOWED_ADMINS"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "operator-service-secrets", "key": name}
    assert env["SIGNATURE_REQUIRED"]["value"] in ("0", "1")
    assert yaml.safe_load(env["ALLOWED_PROVIDERS"]["value"]) is not None


def test_operator_service_runs_locked_down() -> None:
    container = service_container()
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert {"requests", "limits"} <= container["resources"].keys()


# --- all Deployments -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "deployment", [d for d in DOCS if d["kind"] == "Deployment"], ids=lambda d: d["metadata"]["name"]
)
def test_every_deployment_runs_as_non_root_without_escalation(deployment: dict) -> None:
    pod_context = deployment["spec"]["template"]["spec"].get("securityContext", {})
    for container in containers(deployment):
        context = {**pod_context, **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True
        assert context.get("allowPrivilegeEscalation") is False
        assert container.get("resources", {}).get("limits"), "unbounded container"


def test_secret_values_come_only_from_secrets() -> None:
    for doc, entry in all_env():
        if SECRET_LIKE.search(entry["name"]):
            assert "value" not in entry, (doc["metadata"]["name"], entry)
            assert "secretKeyRef" in entry["valueFrom"], (doc["metadata"]["name"], entry)


def test_every_reference_points_at_an_existing_key() -> None:
    """Each secretKeyRef/configMapKeyRef names a Secret/ConfigMap key defined here, in the same namespace."""
    for doc, entry in all_env():
        for ref_kind, kind, field in REFERENCES:
            ref = entry.get("valueFrom", {}).get(ref_kind)
            if ref:
                source = find(kind, ref["name"], doc["metadata"]["namespace"])
                assert ref["key"] in source[field], (doc["metadata"]["name"], ref)


def test_example_secrets_hold_only_placeholders() -> None:
    for secret in ALL["secrets.example.yaml"]:
        assert "data" not in secret
        for key, value in secret["stringData"].items():
            assert "CHANGE-ME" in value, key


# --- the example engine --------------------------------------------------------------------------
def test_engine_has_the_environment_it_needs() -> None:
    (container,) = containers(find("Deployment", "operator-engine", COMPUTE_NS))
    env = env_of(container)
    required = {"POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD",
                "OPERATOR_PRIVATE_KEY", "nCPU", "ramGB", "diskGB", "maxJobs", "maxJobDuration",
                "STORAGE_CLASS", "POD_CONFIGURATION_CONTAINER", "POD_PUBLISH_CONTAINER", "IPFS_OUTPUT"}
    assert required <= env.keys()
    assert env["POSTGRES_HOST"]["value"] == f"postgres.{SERVICE_NS}.svc.cluster.local"
    database = find("ConfigMap", "postgres-config", SERVICE_NS)["data"]
    for name in ("POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER"):
        assert env[name]["value"] == database[name], name
    postgres = find("Service", "postgres", SERVICE_NS)
    assert postgres["spec"]["ports"][0]["port"] == int(database["POSTGRES_PORT"])


def test_the_service_may_fetch_results_from_where_the_example_engine_publishes_them():
    service = env_of(containers(find("Deployment", "operator-service", SERVICE_NS))[0])
    engine = env_of(containers(find("Deployment", "operator-engine", COMPUTE_NS))[0])
    prefixes = tuple(yaml.safe_load(service["RESULT_URL_PREFIXES"]["value"]))
    published = engine["IPFS_OUTPUT_PREFIX"]["value"] + "QmResultHash"
    assert url_allowed(published, prefixes)
