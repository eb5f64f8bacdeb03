"""Stand-ins for docker, kind, minikube and kubectl, so the README's deploy steps run offline.

    python cluster_standins.py TOOL ARGS...

Run by tests/test_readme_kubernetes.py through wrappers named after each tool. They keep what a
Docker daemon and a cluster would hold in one JSON file (STANDIN_STATE): the images built, pushed
and loaded into the cluster, and the objects applied. What can run offline is real: `kubectl
kustomize` and the rendering behind `kubectl apply -k`, and the Secret that `kubectl create secret`
builds (REAL_KUBECTL, with --dry-run=client). A command they do not know fails loudly, so a README
step nobody checked cannot pass unnoticed. `kubectl rollout status` succeeds only when the
Deployment's pods could start: every image was loaded into the cluster, pushed, or is public
(STANDIN_PUBLIC_REPOSITORIES), and every Secret and ConfigMap key its containers read exists.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import yaml

STATE = Path(os.environ["STANDIN_STATE"])


def load_state() -> dict:
    if STATE.exists():
        return json.loads(STATE.read_text())
    return {"built": {}, "pushed": [], "loaded": [], "objects": {}, "log": []}


def save_state(state: dict) -> None:
    STATE.write_text(json.dumps(state, indent=1, sort_keys=True))


def fail(message: str, code: int = 1) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(code)


def unknown(tool: str, args: list[str]) -> NoReturn:
    fail(f"stand-in {tool}: command not simulated: {' '.join(args)}", 2)


# --- docker, kind, minikube ----------------------------------------------------------------------
def docker(state: dict, args: list[str]) -> None:
    if args[:2] == ["build", "-t"] and len(args) == 4:
        image, context = args[2], Path(args[3]).resolve()
        dockerfile = context / "Dockerfile"
        if not dockerfile.is_file():
            fail(f"unable to prepare context: {dockerfile} not found")
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    if not (context / source).exists():
                        fail(f"COPY {source}: not found in the build context {context}")
        state["built"][image] = str(context)
    elif args[:1] == ["push"] and len(args) == 2:
        if args[1] not in state["built"]:
            fail(f"An image does not exist locally with the tag: {args[1]}")
        state["pushed"].append(args[1])
    else:
        unknown("docker", args)


def load_into_cluster(state: dict, tool: str, args: list[str], shape: list[str]) -> None:
    words = []
    rest = iter(args)
    for arg in rest:  # the cluster's name does not matter here: there is one
        if arg == "--name":
            next(rest)
        elif not arg.startswith("--name="):
            words.append(arg)
    if words[: len(shape)] != shape or len(words) != len(shape) + 1:
        unknown(tool, args)
    image = words[-1]
    if image not in state["built"]:
        fail(f"{tool}: image {image} not present locally")
    state["loaded"].append(image)


# --- kubectl -------------------------------------------------------------------------------------
def key(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"


def store(state: dict, docs: list[dict]) -> None:
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    namespaces |= {o["metadata"]["name"] for o in state["objects"].values() if o["kind"] == "Namespace"}
    for doc in docs:
        namespace = doc["metadata"].get("namespace")
        if namespace and namespace not in namespaces:
            fail(f'Error from server (NotFound): namespaces "{namespace}" not found')
    for doc in docs:
        doc["metadata"].pop("creationTimestamp", None)
        state["objects"][key(doc)] = doc
        print(f"{doc['kind'].lower()}/{doc['metadata']['name']} configured")


def real_kubectl(args: list[str], stdin: str | None = None) -> str:
    answer = subprocess.run([os.environ["REAL_KUBECTL"], *args], input=stdin, capture_output=True, text=True)
    if answer.returncode != 0:
        fail(answer.stderr.strip(), answer.returncode)
    return answer.stdout


def parse(args: list[str]) -> tuple[str, list[str], dict[str, str]]:
    """(namespace, words, --options) of a kubectl command line."""
    namespace, words, options = "default", [], {}
    rest = iter(args)
    for arg in rest:
        if arg in ("-n", "--namespace"):
            namespace = next(rest)
        elif arg.startswith("--namespace="):
            namespace = arg.split("=", 1)[1]
        elif arg in ("-o", "-f", "-k"):
            options[arg] = next(rest)
        elif arg.startswith("--"):
            name, _, value = arg.partition("=")
            options[name] = value
        else:
            words.append(arg)
    return namespace, words, options


def kubectl(state: dict, args: list[str]) -> None:
    namespace, words, options = parse(args)
    if words[:1] == ["kustomize"]:
        print(real_kubectl(args), end="")
    elif words == ["apply"] and "-k" in options:
        store(state, [d for d in yaml.safe_load_all(real_kubectl(["kustomize", options["-k"]])) if d])
    elif words == ["apply"] and "-f" in options:
        text = sys.stdin.read() if options["-f"] == "-" else Path(options["-f"]).read_text()
        store(state, [d for d in yaml.safe_load_all(text) if d])
    elif words[:2] == ["get", "secret"] and len(words) == 3:
        get_secret(state, namespace, words[2], options.get("-o"))
    elif words[:3] == ["create", "secret", "generic"] and len(words) == 4:
        create_secret(state, args)
    elif words[:2] == ["rollout", "status"] and len(words) == 3 and words[2].startswith("deploy/"):
        rollout_status(state, namespace, words[2].split("/", 1)[1])
    else:
        unknown("kubectl", args)


def get_secret(state: dict, namespace: str, name: str, output: str | None) -> None:
    secret = state["objects"].get(f"Secret/{namespace}/{name}")
    if secret is None:
        fail(f'Error from server (NotFound): secrets "{name}" not found')
    if output is None:
        print(f"{name}   Opaque   {len(secret['data'])}")
        return
    match = re.fullmatch(r"jsonpath=\{\.data\.([A-Za-z0-9_]+)\}", output)
    if not match:
        unknown("kubectl", ["get", "secret", name, "-o", output])
    print(secret["data"].get(match.group(1), ""), end="")


def create_secret(state: dict, args: list[str]) -> None:
    secret = json.loads(real_kubectl([*args, "--dry-run=client", "-o", "json"], sys.stdin.read()))
    if key(secret) in state["objects"]:
        fail(f'Error from server (AlreadyExists): secrets "{secret["metadata"]["name"]}" already exists')
    store(state, [secret])


def rollout_status(state: dict, namespace: str, name: str) -> None:
    deployment = state["objects"].get(f"Deployment/{namespace}/{name}")
    if deployment is None:
        fail(f'Error from server (NotFound): deployments.apps "{name}" not found')
    public = set(os.environ.get("STANDIN_PUBLIC_REPOSITORIES", "").split(","))
    pod = deployment["spec"]["template"]["spec"]
    for container in pod.get("initContainers", []) + pod["containers"]:
        image = container["image"]
        if image not in state["loaded"] + state["pushed"] and image.rsplit(":", 1)[0] not in public:
            fail(f"deployment {name}: {container['name']}: ErrImagePull: {image} is neither loaded, pushed nor public")
        for entry in container.get("env", []):
            for ref_kind, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                ref = entry.get("valueFrom", {}).get(ref_kind)
                source = ref and state["objects"].get(f"{kind}/{namespace}/{ref['name']}")
                if ref and (source is None or ref["key"] not in source.get("data", {})):
                    fail(
                        f"deployment {name}: {container['name']}: CreateContainerConfigError: "
                        f"{kind.lower()} {ref['name']} has no key {ref['key']}"
                    )
    print(f'deployment "{name}" successfully rolled out')


def main() -> None:
    tool, args = sys.argv[1], sys.argv[2:]
    state = load_state()
    state["log"].append([tool, *args])
    save_state(state)  # the call is logged even when it fails
    if tool == "docker":
        docker(state, args)
    elif tool == "kind":
        load_into_cluster(state, tool, args, ["load", "docker-image"])
    elif tool == "minikube":
        load_into_cluster(state, tool, args, ["image", "load"])
    elif tool == "kubectl":
        kubectl(state, args)
    else:
        unknown(tool, args)
    save_state(state)


if __name__ == "__main__":
    main()
