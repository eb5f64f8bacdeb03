"""The Kubernetes manifests in k8s/, as `kubectl kustomize` renders each overlay: what they declare,
what they grant, that the API server would accept them, that they run this project's image, and
that they match cluster/client.py."""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from eth_keys import keys
from kubernetes_validate.utils import all_versions

from operator_service.cluster import client as kube
from operator_service.domain.results import url_allowed
from tests import fake_kube
from tests.kube_samples import workflow_body
from tests.kustomize import (
    K8S,
    OVERLAYS,
    KubectlUnusable,
    check_version,
    find_kubectl,
    render,
    rendered,
    secrets_from_script,
)

SERVICE_NS = "ocean-operator"
COMPUTE_NS = "ocean-compute"
BASE = K8S / "base"
# Each source file and the kinds it holds, in order.
EXPECTED_KINDS = {
    "base/namespaces.yaml": ["Namespace", "Namespace"],
    "base/crd-workflow.yaml": ["CustomResourceDefinition"],
    "base/rbac.yaml": ["ServiceAccount", "Role", "RoleBinding"],
    "base/operator-service.yaml": ["Deployment", "Service"],
    "base/operator-engine.yaml": ["ServiceAccount", "Role", "RoleBinding", "Deployment"],
    "overlays/local/postgres.yaml": ["PersistentVolumeClaim", "Deployment", "Service"],
}
BASE_OBJECTS = {
    ("Namespace", None, SERVICE_NS),
    ("Namespace", None, COMPUTE_NS),
    ("CustomResourceDefinition", None, f"{kube.PLURAL}.{kube.GROUP}"),
    ("ServiceAccount", SERVICE_NS, "operator-service"),
    ("Role", COMPUTE_NS, "operator-service"),
    ("RoleBinding", COMPUTE_NS, "operator-service"),
    ("Deployment", SERVICE_NS, "operator-service"),
    ("Service", SERVICE_NS, "operator-service"),
    ("ServiceAccount", COMPUTE_NS, "operator-engine"),
    ("Role", COMPUTE_NS, "operator-engine"),
    ("RoleBinding", COMPUTE_NS, "operator-engine"),
    ("Deployment", COMPUTE_NS, "operator-engine"),
    # made by each overlay from its postgres.env
    ("ConfigMap", SERVICE_NS, "postgres-config"),
    ("ConfigMap", COMPUTE_NS, "postgres-config"),
}
TRIAL_DATABASE = {
    ("PersistentVolumeClaim", SERVICE_NS, "postgres-data"),
    ("Deployment", SERVICE_NS, "postgres"),
    ("Service", SERVICE_NS, "postgres"),
}
EXPECTED_OBJECTS = {"local": BASE_OBJECTS | TRIAL_DATABASE, "production": BASE_OBJECTS}
# The name the manifests give the service's image; the base's `images:` replaces it.
IMAGE_PLACEHOLDER = "operator-service"
# Images that are not this project's, by design: Ocean's operator-engine and the images of its
# stage pods (this project replaces Ocean's service, not its engine), and the official Postgres
# image that runs the trial database of the local overlay.
OCEAN_ENGINE_IMAGES = {"oceanprotocol/operator-engine"}
OCEAN_STAGE_IMAGES = {
    "POD_CONFIGURATION_CONTAINER": "oceanprotocol/pod-configuration",
    "POD_PUBLISH_CONTAINER": "oceanprotocol/pod-publishing",
}
TRIAL_DATABASE_IMAGE = "postgres"
RBAC_GROUP = "rbac.authorization.k8s.io"
REFERENCES = (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap"))
SECRET_LIKE = re.compile(r"PASSWORD|SECRET|PRIVATE_KEY|ADMINS|TOKEN|ACCESS_KEY|API_KEY", re.IGNORECASE)
GENERATED_SUFFIX = re.compile(r"-[a-z0-9]{10}$")  # kustomize's content hash on generated ConfigMaps
# Every Kubernetes minor release whose API schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = sorted(
    {re.match(r"\d+\.\d+", v).group(0) for v in all_versions()}, key=lambda v: tuple(map(int, v.split(".")))
)


def load_yaml(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def logical_name(doc: dict) -> str:
    name = doc["metadata"]["name"]
    return GENERATED_SUFFIX.sub("", name) if doc["kind"] == "ConfigMap" else name


def identity(doc: dict) -> tuple[str, str | None, str]:
    return doc["kind"], doc["metadata"].get("namespace"), logical_name(doc)


class Manifests:
    """One overlay's rendered objects."""

    def __init__(self, overlay: str, docs: list[dict]) -> None:
        self.overlay = overlay
        self.docs = docs

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict:
        """The object of that kind and namespace with that name, or that generated name."""
        matches = [
            doc
            for doc in self.docs
            if doc["kind"] == kind
            and name in (doc["metadata"]["name"], logical_name(doc))
            and doc["metadata"].get("namespace") == namespace
        ]
        assert len(matches) == 1, f"{self.overlay}: expected one {kind} {namespace}/{name}, found {len(matches)}"
        return matches[0]

    def of_kind(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def all_env(self) -> Iterator[tuple[dict, dict]]:
        for doc in self.of_kind("Deployment"):
            for container in containers(doc, init=True):
                for entry in container.get("env", []):
                    yield doc, entry


def rendered_overlay(overlay: str) -> Manifests:
    try:
        return Manifests(overlay, [copy.deepcopy(doc) for doc in rendered(overlay)])
    except KubectlUnusable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def manifests(request) -> Manifests:
    return rendered_overlay(request.param)


@pytest.fixture(scope="module")
def local() -> Manifests:
    return rendered_overlay("local")


@pytest.fixture(scope="module")
def production() -> Manifests:
    return rendered_overlay("production")


@pytest.fixture(scope="module")
def script_secrets() -> list[dict]:
    try:
        return secrets_from_script()
    except KubectlUnusable as exc:
        pytest.fail(str(exc), pytrace=False)


def containers(doc: dict, init: bool = False) -> list[dict]:
    pod = doc["spec"]["template"]["spec"]
    return (pod.get("initContainers", []) if init else []) + pod["containers"]


def env_of(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def service_account(name: str, namespace: str) -> dict:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def granted(role: dict) -> dict[str, set[str]]:
    verbs: dict[str, set[str]] = {}
    for rule in role["rules"]:
        for resource in rule["resources"]:
            verbs.setdefault(resource, set()).update(rule["verbs"])
    return verbs


def secret_values(secret: dict) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def base_image() -> tuple[str, str]:
    """The service's image as the base's `images:` sets it: (name, tag)."""
    (entry,) = load_yaml(BASE / "kustomization.yaml")[0]["images"]
    return entry["newName"], str(entry["newTag"])


# --- the files and what the overlays render ---------------------------------------------------
def test_each_manifest_file_holds_the_expected_kinds() -> None:
    found = {
        path.relative_to(K8S).as_posix(): [doc["kind"] for doc in load_yaml(path)]
        for path in sorted(K8S.rglob("*.yaml"))
        if path.name != "kustomization.yaml"
    }
    assert found == EXPECTED_KINDS


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS.values()], ids=lambda p: p.relative_to(K8S).as_posix())
def test_each_kustomization_lists_every_manifest_beside_it(folder: Path) -> None:
    """A manifest added to a folder but not to its kustomization.yaml would never be deployed."""
    (kustomization,) = load_yaml(folder / "kustomization.yaml")
    files = {path.name for path in folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert {entry for entry in kustomization["resources"] if not entry.startswith("..")} == files


def test_each_overlay_deploys_the_expected_objects(manifests: Manifests) -> None:
    identities = [identity(doc) for doc in manifests.docs]
    assert len(identities) == len(set(identities))
    assert set(identities) == EXPECTED_OBJECTS[manifests.overlay]


def test_database_settings_are_renamed_when_they_change(manifests: Manifests) -> None:
    """Generated ConfigMaps carry a hash of their content, so a changed postgres.env restarts the pods."""
    for doc in manifests.of_kind("ConfigMap"):
        assert GENERATED_SUFFIX.search(doc["metadata"]["name"]), doc["metadata"]


def validation_errors(doc: dict) -> list[str]:
    """What the API server's schema of each Kubernetes release says against one object (unknown
    fields included); a kind without a schema is an error too."""
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            errors.append(f"{doc['kind']} {doc['metadata'].get('name')} on {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(exc.message)
    return errors


def test_every_rendered_object_is_valid_on_every_kubernetes_release(manifests: Manifests) -> None:
    """Strict: an unknown field (a misspelt one, or one a release does not have) is an error."""
    assert len(KUBERNETES_VERSIONS) >= 5, KUBERNETES_VERSIONS
    assert [error for doc in manifests.docs for error in validation_errors(doc)] == []


def test_the_secrets_script_makes_valid_secrets(script_secrets: list[dict]) -> None:
    assert [error for doc in script_secrets for error in validation_errors(doc)] == []


def test_the_validation_catches_a_misspelled_or_mistyped_field(local: Manifests) -> None:
    misspelled = copy.deepcopy(local.find("Deployment", "operator-service", SERVICE_NS))
    container = containers(misspelled)[0]
    container["livenesProbe"] = container.pop("livenessProbe")  # without the check: no probe, silently
    errors = validation_errors(misspelled)
    assert len(errors) == len(KUBERNETES_VERSIONS) and all("'livenesProbe' was unexpected" in e for e in errors)
    mistyped = copy.deepcopy(local.find("Service", "operator-service", SERVICE_NS))
    mistyped["spec"]["ports"][0]["port"] = "8050"
    assert validation_errors(mistyped)


# --- the image: this project's, set in one place ---------------------------------------------
def test_the_image_is_set_in_one_place() -> None:
    """The base's `images:` names the service's image; no overlay and no manifest names it again."""
    (entry,) = load_yaml(BASE / "kustomization.yaml")[0]["images"]
    assert entry["name"] == IMAGE_PLACEHOLDER and entry.keys() == {"name", "newName", "newTag"}
    for overlay in OVERLAYS.values():
        assert "images" not in load_yaml(overlay / "kustomization.yaml")[0], overlay
    for path in K8S.rglob("*.yaml"):
        for doc in load_yaml(path):
            if doc.get("kind") == "Deployment":
                for container in containers(doc, init=True):
                    image = container["image"]
                    if doc["metadata"]["name"] == "operator-service":
                        assert image == IMAGE_PLACEHOLDER, (path, image)
                    else:
                        assert image.split(":")[0] in OCEAN_ENGINE_IMAGES | {TRIAL_DATABASE_IMAGE}, (path, image)


def test_every_container_runs_this_projects_image_or_an_allowed_one(manifests: Manifests) -> None:
    """The service, its schema migration and its reconciler run the image built from this repository, never Ocean's
    original service; the only other images are Ocean's engine and its stage pods (by design: this
    project replaces the service, not the engine) and, in the local overlay, the trial Postgres."""
    name, tag = base_image()
    assert not name.startswith(("oceanprotocol/", "docker.io/oceanprotocol/"))
    allowed = {
        "operator-service": lambda image: image == f"{name}:{tag}",
        "operator-engine": lambda image: image.split(":")[0] in OCEAN_ENGINE_IMAGES,
    }
    if manifests.overlay == "local":
        allowed["postgres"] = lambda image: re.fullmatch(rf"{TRIAL_DATABASE_IMAGE}:\d+", image) is not None
    images = []
    for doc in manifests.of_kind("Deployment"):
        for container in containers(doc, init=True):
            images.append(container["image"])
            assert allowed[doc["metadata"]["name"]](container["image"]), (doc["metadata"]["name"], container)
    assert images.count(f"{name}:{tag}") == 3  # the service, its migration and its reconciler
    assert sorted(every_image(manifests.docs)) == sorted(images)  # no image outside those containers
    engine = env_of(containers(manifests.find("Deployment", "operator-engine", COMPUTE_NS))[0])
    for variable, stage_image in OCEAN_STAGE_IMAGES.items():
        assert engine[variable]["value"].split(":")[0] == stage_image
    assert "oceanprotocol/operator-service" not in json.dumps(manifests.docs)


def every_image(value: Any) -> Iterator[str]:
    """Every `image:` anywhere in the rendered objects, whatever kind holds it."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "image" and isinstance(item, str):
                yield item
            else:
                yield from every_image(item)
    elif isinstance(value, list):
        for item in value:
            yield from every_image(item)


def run_set_image(k8s: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(k8s / "set-image.sh"), *args], capture_output=True, text=True)


def service_images(docs: list[dict]) -> set[str]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "operator-service"]
    return {container["image"] for container in containers(deployment, init=True)}


def test_set_image_changes_what_every_overlay_runs(tmp_path: Path) -> None:
    k8s = shutil.copytree(K8S, tmp_path / "k8s")
    image = "registry.example.com:5000/team/operator-service:1a2b3c4"
    result = run_set_image(k8s, image)
    assert result.returncode == 0, result.stderr
    assert image in result.stdout
    written = (k8s / "base" / "kustomization.yaml").read_bytes()
    try:
        for overlay in OVERLAYS.values():
            assert service_images(render(k8s / overlay.relative_to(K8S))) == {image}
    except KubectlUnusable as exc:
        pytest.fail(str(exc), pytrace=False)
    assert run_set_image(k8s, image).returncode == 0
    assert (k8s / "base" / "kustomization.yaml").read_bytes() == written  # the same image again: no change


@pytest.mark.parametrize(
    "argument",
    [
        "operator-service",
        "registry.example.com:5000/operator-service",
        "operator-service@sha256:" + "0" * 64,
        "operator service:1",
        "",
    ],
)
def test_set_image_refuses_what_is_not_a_name_and_tag(tmp_path: Path, argument: str) -> None:
    k8s = shutil.copytree(K8S, tmp_path / "k8s")
    result = run_set_image(k8s, argument)
    assert result.returncode == 2 and result.stderr
    assert (k8s / "base" / "kustomization.yaml").read_bytes() == (BASE / "kustomization.yaml").read_bytes()


# --- the schema migration ----------------------------------------------------------------------
def test_the_schema_is_migrated_before_the_service_starts(manifests: Manifests) -> None:
    deployment = manifests.find("Deployment", "operator-service", SERVICE_NS)
    (migrate,) = deployment["spec"]["template"]["spec"]["initContainers"]
    service = service_container(manifests)
    assert migrate["command"] == ["operator-service", "migrate"]
    assert migrate["image"] == service["image"]
    database = {name: entry for name, entry in env_of(service).items() if name.startswith("POSTGRES_")}
    assert len(database) == 5 and env_of(migrate) == {**database, "LOG_FORMAT": env_of(service)["LOG_FORMAT"]}
    assert "operator-service" in {entry.name for entry in entry_points(group="console_scripts")}


# --- the WorkFlow CRD ----------------------------------------------------------------------------
def crd(manifests: Manifests) -> dict:
    return manifests.find("CustomResourceDefinition", f"{kube.PLURAL}.{kube.GROUP}")


def test_crd_defines_the_resource_kube_and_the_fake_use(manifests: Manifests) -> None:
    spec = crd(manifests)["spec"]
    (version,) = spec["versions"]
    assert (spec["group"], version["name"], spec["scope"]) == (kube.GROUP, kube.VERSION, "Namespaced")
    assert version["served"] is True and version["storage"] is True
    assert spec["names"] == {
        "kind": kube.KIND,
        "listKind": f"{kube.KIND}List",
        "plural": kube.PLURAL,
        "singular": "workflow",
        "shortNames": ["wf"],
    }
    assert (fake_kube.GROUP, fake_kube.VERSION, fake_kube.KIND, fake_kube.PLURAL) == (
        kube.GROUP,
        kube.VERSION,
        kube.KIND,
        kube.PLURAL,
    )


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


def test_a_workflow_as_created_fits_the_crd(manifests: Manifests) -> None:
    body = workflow_body()
    spec = crd(manifests)["spec"]
    assert body["apiVersion"] == f"{spec['group']}/{spec['versions'][0]['name']}"
    assert body["kind"] == spec["names"]["kind"]
    assert body["metadata"]["namespace"] == COMPUTE_NS  # Namespaced: every WorkFlow names one
    schema = spec["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema_errors({k: v for k, v in body.items() if k != "metadata"}, schema) == []
    without_spec = {"apiVersion": body["apiVersion"], "kind": body["kind"]}
    assert schema_errors(without_spec, schema) == [".spec: required"]


# --- RBAC ----------------------------------------------------------------------------------------
def test_operator_service_role_grants_exactly_the_verbs_kube_uses(manifests: Manifests) -> None:
    role = manifests.find("Role", "operator-service", COMPUTE_NS)
    assert granted(role) == kube.RBAC_VERBS
    groups = {resource: rule["apiGroups"] for rule in role["rules"] for resource in rule["resources"]}
    assert groups == {"workflows": [kube.GROUP], "pods": [""], "pods/log": [""]}


def test_operator_service_role_is_bound_to_its_service_account(manifests: Manifests) -> None:
    manifests.find("ServiceAccount", "operator-service", SERVICE_NS)
    binding = manifests.find("RoleBinding", "operator-service", COMPUTE_NS)
    assert binding["roleRef"] == {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "operator-service"}
    assert binding["subjects"] == [service_account("operator-service", SERVICE_NS)]
    deployment = manifests.find("Deployment", "operator-service", SERVICE_NS)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "operator-service"


def test_operator_engine_role_covers_only_what_the_engine_does(manifests: Manifests) -> None:
    role = manifests.find("Role", "operator-engine", COMPUTE_NS)
    assert granted(role) == {
        "jobs": {"create", "get", "delete"},
        "persistentvolumeclaims": {"create", "delete"},
        "configmaps": {"create", "delete"},
    }
    binding = manifests.find("RoleBinding", "operator-engine", COMPUTE_NS)
    assert binding["roleRef"] == {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "operator-engine"}
    assert binding["subjects"] == [service_account("operator-engine", COMPUTE_NS)]
    deployment = manifests.find("Deployment", "operator-engine", COMPUTE_NS)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "operator-engine"


def test_nothing_is_cluster_wide_or_wildcard(manifests: Manifests) -> None:
    kinds = {doc["kind"] for doc in manifests.docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    for doc in manifests.docs:
        assert doc.get("roleRef", {}).get("name") != "cluster-admin"
        for rule in doc.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


# --- shape ---------------------------------------------------------------------------------------
def test_namespaced_objects_live_in_the_two_namespaces(manifests: Manifests) -> None:
    namespaces = {doc["metadata"]["name"] for doc in manifests.of_kind("Namespace")}
    assert namespaces == {SERVICE_NS, COMPUTE_NS}
    for doc in manifests.docs:
        if doc["kind"] not in ("Namespace", "CustomResourceDefinition"):
            assert doc["metadata"].get("namespace") in (SERVICE_NS, COMPUTE_NS), doc["metadata"]


def test_deployment_selectors_match_their_pods_and_services(manifests: Manifests) -> None:
    for doc in manifests.of_kind("Deployment"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for service in manifests.of_kind("Service"):
        deployment = manifests.find("Deployment", service["metadata"]["name"], service["metadata"]["namespace"])
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        ports = {p["name"] for c in containers(deployment) for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


# --- the operator-service Deployment -------------------------------------------------------------
def service_container(manifests: Manifests, name: str = "operator-service") -> dict:
    (container,) = [
        c for c in containers(manifests.find("Deployment", "operator-service", SERVICE_NS)) if c["name"] == name
    ]
    return container


def test_the_reconciler_runs_beside_the_api_on_the_same_database_and_cluster(manifests: Manifests) -> None:
    service, reconciler = service_container(manifests), service_container(manifests, "reconciler")
    assert reconciler["command"] == ["operator-service", "reconcile"]
    assert reconciler["image"] == service["image"] and "ports" not in reconciler
    shared = {
        name: entry
        for name, entry in env_of(service).items()
        if name.startswith("POSTGRES_") or name in ("KUBERNETES", "DEFAULT_NAMESPACE", "LOG_FORMAT")
    }
    assert env_of(reconciler) == shared


def test_the_service_is_scraped_and_its_workers_share_a_metrics_folder(manifests: Manifests) -> None:
    [deployment] = [item for item in manifests.of_kind("Deployment") if item["metadata"]["name"] == "operator-service"]
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    container = service_container(manifests)
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/path"]) == ("true", "/metrics")
    assert {"name": "http", "containerPort": int(annotations["prometheus.io/port"])} in container["ports"]
    folder = env_of(container)["PROMETHEUS_MULTIPROC_DIR"]["value"]
    [mount] = [mount for mount in container["volumeMounts"] if mount["mountPath"] == folder]
    [volume] = [volume for volume in template["spec"]["volumes"] if volume["name"] == mount["name"]]
    assert "emptyDir" in volume, "the metrics folder must start empty with every pod"


def test_operator_service_listens_on_8050_behind_its_service(manifests: Manifests) -> None:
    assert service_container(manifests)["ports"] == [{"name": "http", "containerPort": 8050}]
    service = manifests.find("Service", "operator-service", SERVICE_NS)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8050, "targetPort": "http"}]


def test_operator_service_probes_use_the_liveness_and_readiness_routes(manifests: Manifests) -> None:
    container = service_container(manifests)
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_the_image_runs_the_configured_server_and_checks_readiness() -> None:
    """The image starts gunicorn through `operator-service serve` (the settings `make run` uses)."""
    dockerfile = (K8S.parent / "Dockerfile").read_text()
    assert re.search(r'^CMD \["operator-service", "serve"\]$', dockerfile, re.MULTILINE)
    healthcheck = re.search(r"^HEALTHCHECK .*\n(?:.*\n)*?.*CMD (.*)$", dockerfile, re.MULTILINE)
    assert healthcheck and "/readyz" in healthcheck.group(1)


def test_operator_service_configuration(manifests: Manifests) -> None:
    env = env_of(service_container(manifests))
    assert env["KUBERNETES"]["value"] == "on"
    assert env["DEFAULT_NAMESPACE"]["value"] == COMPUTE_NS
    database = manifests.find("ConfigMap", "postgres-config", SERVICE_NS)["metadata"]["name"]
    for name in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER"):
        assert env[name]["valueFrom"]["configMapKeyRef"] == {"name": database, "key": name}
    for name in ("POSTGRES_PASSWORD", "ALLOWED_ADMINS"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "operator-service-secrets", "key": name}
    assert env["SIGNATURE_REQUIRED"]["value"] in ("0", "1")
    assert yaml.safe_load(env["ALLOWED_PROVIDERS"]["value"]) is not None


def test_operator_service_runs_locked_down(manifests: Manifests) -> None:
    for container in containers(manifests.find("Deployment", "operator-service", SERVICE_NS), init=True):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert {"requests", "limits"} <= container["resources"].keys()


# --- all Deployments -----------------------------------------------------------------------------
def test_every_deployment_runs_as_non_root_without_escalation(manifests: Manifests) -> None:
    deployments = manifests.of_kind("Deployment")
    assert len(deployments) == (3 if manifests.overlay == "local" else 2)
    for deployment in deployments:
        pod_context = deployment["spec"]["template"]["spec"].get("securityContext", {})
        for container in containers(deployment, init=True):
            context = {**pod_context, **container.get("securityContext", {})}
            where = (deployment["metadata"]["name"], container["name"])
            assert context.get("runAsNonRoot") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert container.get("resources", {}).get("limits"), f"unbounded container {where}"


def test_secret_values_come_only_from_secrets(manifests: Manifests) -> None:
    for doc, entry in manifests.all_env():
        if SECRET_LIKE.search(entry["name"]):
            assert "value" not in entry, (doc["metadata"]["name"], entry)
            assert "secretKeyRef" in entry["valueFrom"], (doc["metadata"]["name"], entry)


def test_every_reference_points_at_an_existing_key(manifests: Manifests, script_secrets: list[dict]) -> None:
    """Each configMapKeyRef names a key of a ConfigMap the overlay renders, and each secretKeyRef a
    key of a Secret k8s/secrets.sh creates, in the same namespace."""
    sources = {
        "ConfigMap": Manifests(manifests.overlay, manifests.of_kind("ConfigMap")),
        "Secret": Manifests("k8s/secrets.sh", script_secrets),
    }
    references = 0
    for doc, entry in manifests.all_env():
        for ref_kind, kind in REFERENCES:
            ref = entry.get("valueFrom", {}).get(ref_kind)
            if ref:
                source = sources[kind].find(kind, ref["name"], doc["metadata"]["namespace"])
                assert source["metadata"]["name"] == ref["name"], (doc["metadata"]["name"], ref)
                assert ref["key"] in source["data"], (doc["metadata"]["name"], ref)
                references += 1
    assert references >= 17  # the walk saw them: service 6, migration 5, engine 6 (+3 trial Postgres)


# --- the Secrets ---------------------------------------------------------------------------------
def test_the_secrets_script_makes_fresh_values_that_fit_together(script_secrets: list[dict]) -> None:
    by_name = {doc["metadata"]["name"]: secret_values(doc) for doc in script_secrets}
    assert {(doc["metadata"]["namespace"], doc["metadata"]["name"]) for doc in script_secrets} == {
        (SERVICE_NS, "operator-service-secrets"),
        (COMPUTE_NS, "operator-engine-secrets"),
    }
    service, engine = by_name["operator-service-secrets"], by_name["operator-engine-secrets"]
    assert service.keys() == {"POSTGRES_PASSWORD", "ALLOWED_ADMINS"}
    assert engine.keys() == {"POSTGRES_PASSWORD", "OPERATOR_PRIVATE_KEY"}
    assert service["POSTGRES_PASSWORD"] == engine["POSTGRES_PASSWORD"]  # one database user
    assert len(service["POSTGRES_PASSWORD"]) >= 32
    (admin,) = json.loads(service["ALLOWED_ADMINS"])
    assert isinstance(admin, str) and len(admin) >= 32
    keys.PrivateKey(bytes.fromhex(engine["OPERATOR_PRIVATE_KEY"].removeprefix("0x")))
    again = {doc["metadata"]["name"]: secret_values(doc) for doc in secrets_from_script()}
    for name, values in again.items():
        for key, value in values.items():
            assert value != by_name[name][key], (name, key)  # random on every run, never a fixed value


def test_the_secrets_script_keeps_the_values_it_is_given() -> None:
    given = {
        "POSTGRES_PASSWORD": "pa ss\"wo=rd'$x",
        "ALLOWED_ADMINS": '["one admin secret", "another"]',
        "OPERATOR_PRIVATE_KEY": "0x" + "11" * 32,
    }
    secrets = {doc["metadata"]["name"]: secret_values(doc) for doc in secrets_from_script(given)}
    assert secrets == {
        "operator-service-secrets": {k: given[k] for k in ("POSTGRES_PASSWORD", "ALLOWED_ADMINS")},
        "operator-engine-secrets": {k: given[k] for k in ("POSTGRES_PASSWORD", "OPERATOR_PRIVATE_KEY")},
    }


# --- the example engine and the database ---------------------------------------------------------
def test_engine_has_the_environment_it_needs(manifests: Manifests) -> None:
    (container,) = containers(manifests.find("Deployment", "operator-engine", COMPUTE_NS))
    env = env_of(container)
    required = {
        "POSTGRES_HOST",
        "POSTGRES_PORT",
        "POSTGRES_DB",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "OPERATOR_PRIVATE_KEY",
        "nCPU",
        "ramGB",
        "diskGB",
        "maxJobs",
        "maxJobDuration",
        "STORAGE_CLASS",
        "POD_CONFIGURATION_CONTAINER",
        "POD_PUBLISH_CONTAINER",
        "IPFS_OUTPUT",
    }
    assert required <= env.keys()
    database = manifests.find("ConfigMap", "postgres-config", COMPUTE_NS)
    for name in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER"):
        assert env[name]["valueFrom"]["configMapKeyRef"] == {"name": database["metadata"]["name"], "key": name}


def test_the_engine_and_the_service_use_the_same_database(manifests: Manifests) -> None:
    service = manifests.find("ConfigMap", "postgres-config", SERVICE_NS)["data"]
    engine = manifests.find("ConfigMap", "postgres-config", COMPUTE_NS)["data"]
    assert service == engine
    assert service.keys() == {"POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER"}


def test_the_local_overlay_points_both_at_its_trial_database(local: Manifests) -> None:
    database = local.find("ConfigMap", "postgres-config", SERVICE_NS)
    settings = database["data"]
    postgres = local.find("Service", "postgres", SERVICE_NS)
    assert settings["POSTGRES_HOST"] == f"{postgres['metadata']['name']}.{SERVICE_NS}.svc.cluster.local"
    assert postgres["spec"]["ports"][0]["port"] == int(settings["POSTGRES_PORT"])
    env = env_of(containers(local.find("Deployment", "postgres", SERVICE_NS))[0])
    for name in ("POSTGRES_DB", "POSTGRES_USER"):  # the trial server creates that database and user
        assert env[name]["valueFrom"]["configMapKeyRef"] == {"name": database["metadata"]["name"], "key": name}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "operator-service-secrets",
        "key": "POSTGRES_PASSWORD",
    }


def test_the_production_overlay_runs_no_database(production: Manifests) -> None:
    assert not production.of_kind("PersistentVolumeClaim")
    assert {doc["metadata"]["name"] for doc in production.of_kind("Deployment")} == {
        "operator-service",
        "operator-engine",
    }
    host = production.find("ConfigMap", "postgres-config", SERVICE_NS)["data"]["POSTGRES_HOST"]
    assert not host.endswith(".svc.cluster.local") and host != "postgres"


def test_the_service_may_fetch_results_from_where_the_example_engine_publishes_them(manifests: Manifests):
    service = env_of(containers(manifests.find("Deployment", "operator-service", SERVICE_NS))[0])
    engine = env_of(containers(manifests.find("Deployment", "operator-engine", COMPUTE_NS))[0])
    prefixes = tuple(yaml.safe_load(service["RESULT_URL_PREFIXES"]["value"]))
    published = engine["IPFS_OUTPUT_PREFIX"]["value"] + "QmResultHash"
    assert url_allowed(published, prefixes)


# --- kubectl -------------------------------------------------------------------------------------
def test_without_kubectl_the_tests_fail_saying_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(KubectlUnusable, match="kubectl is not installed.*apt-get install -y kubernetes-client"):
        find_kubectl(search_path=str(tmp_path), is_root=False)


def test_a_kubectl_too_old_for_the_overlays_is_refused_with_the_reason() -> None:
    debian_12 = {"clientVersion": {"major": "1", "minor": "20", "gitVersion": "v1.20.2"}}
    with pytest.raises(KubectlUnusable, match=r"kubectl v1\.20\.2 embeds kustomize v2.*1\.21 or newer"):
        check_version(debian_12)
    check_version({"clientVersion": {"major": "1", "minor": "22", "gitVersion": "v1.22.0"}})
    check_version({"clientVersion": {"major": "1", "minor": "32+"}, "kustomizeVersion": "v5.5.0"})
