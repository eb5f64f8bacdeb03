#!/bin/sh
# Sets the image the service runs: `k8s/set-image.sh NAME:TAG`, for example
#   k8s/set-image.sh registry.example.com/team/operator-service:1a2b3c4
# It writes NAME and TAG into the `images:` entry of k8s/base/kustomization.yaml, the one place
# the image is set; both overlays take it from there. Setting the same image again changes nothing.
set -eu

usage() { echo "usage: $0 NAME:TAG (the image you built from this repository)" >&2; exit 2; }
[ $# -eq 1 ] || usage
image=$1
name=${image%:*}
tag=${image##*:}
case "$image" in *:*) ;; *) usage ;; esac
case "$tag" in ""|*/*) usage ;; esac
[ -n "$name" ] || usage
case "$image" in
  *@*) echo "$0: give a tag, not a digest: $image" >&2; exit 2 ;;
  *[!A-Za-z0-9._:/-]*) echo "$0: not an image name: $image" >&2; exit 2 ;;
esac

kustomization="$(dirname "$0")/base/kustomization.yaml"
sed -e "s|^\( *newName:\).*|\1 $name|" -e "s|^\( *newTag:\).*|\1 \"$tag\"|" "$kustomization" >"$kustomization.new"
mv "$kustomization.new" "$kustomization"
echo "k8s/base/kustomization.yaml: the service runs $name:$tag"
