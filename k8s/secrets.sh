#!/bin/sh
# Creates the Secrets the manifests reference, in the cluster of the current kubectl context:
#   operator-service-secrets in ocean-operator: POSTGRES_PASSWORD, ALLOWED_ADMINS
#   operator-engine-secrets  in ocean-compute:  POSTGRES_PASSWORD, OPERATOR_PRIVATE_KEY
# Run it after the namespaces exist and before the first `kubectl apply -k`. A Secret that exists
# already is left as it is, so running it again changes nothing; the engine's copy of the password
# is taken from the service's Secret when that one exists.
#
# Values: POSTGRES_PASSWORD, ALLOWED_ADMINS (a JSON list of admin secrets) and OPERATOR_PRIVATE_KEY
# from the environment when set, else random. They go to kubectl on its standard input, never on
# a command line, and are neither written to disk nor printed. Read the admin secret back with
#   kubectl -n ocean-operator get secret operator-service-secrets -o jsonpath='{.data.ALLOWED_ADMINS}' | base64 -d
#
# `k8s/secrets.sh --dry-run` contacts no cluster: it prints the Secrets it would create as YAML.
set -eu

SERVICE_NS=ocean-operator
ENGINE_NS=ocean-compute
dry_run=false
case "${1:-}" in
  "") ;;
  --dry-run) dry_run=true ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

random_hex() {  # 32 random bytes as 64 hex digits
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

exists() {  # namespace name
  ! $dry_run && kubectl -n "$1" get secret "$2" >/dev/null 2>&1
}

create() {  # namespace name; KEY=VALUE lines on standard input
  if $dry_run; then
    echo ---
    kubectl -n "$1" create secret generic "$2" --from-env-file=/dev/stdin --dry-run=client -o yaml
  else
    kubectl -n "$1" create secret generic "$2" --from-env-file=/dev/stdin
  fi
}

if exists "$SERVICE_NS" operator-service-secrets; then
  password=$(kubectl -n "$SERVICE_NS" get secret operator-service-secrets \
    -o jsonpath='{.data.POSTGRES_PASSWORD}' | base64 -d)
else
  password=${POSTGRES_PASSWORD:-$(random_hex)}
  printf 'POSTGRES_PASSWORD=%s\nALLOWED_ADMINS=%s\n' \
    "$password" "${ALLOWED_ADMINS:-[\"$(random_hex)\"]}" | create "$SERVICE_NS" operator-service-secrets
fi

if ! exists "$ENGINE_NS" operator-engine-secrets; then
  printf 'POSTGRES_PASSWORD=%s\nOPERATOR_PRIVATE_KEY=%s\n' \
    "$password" "${OPERATOR_PRIVATE_KEY:-0x$(random_hex)}" | create "$ENGINE_NS" operator-engine-secrets
fi
