#!/usr/bin/env bash
# Bump the version: ./bumpversion.sh major|minor|patch
# The version is written in one place, operator_service/__init__.py; setup.py reads it there.
set -euo pipefail
cd "$(dirname "$0")"

part="${1:-}"
case "$part" in
  major|minor|patch) ;;
  *) echo "usage: $0 major|minor|patch" >&2; exit 2 ;;
esac

file=operator_service/__init__.py
current=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$file")
[ -n "$current" ] || { echo "$file holds no __version__" >&2; exit 1; }
IFS=. read -r major minor patch <<<"$current"
case "$part" in
  major) major=$((major + 1)); minor=0; patch=0 ;;
  minor) minor=$((minor + 1)); patch=0 ;;
  patch) patch=$((patch + 1)) ;;
esac
next="$major.$minor.$patch"
sed -i "s/^__version__ = \"$current\"\$/__version__ = \"$next\"/" "$file"
echo "$current -> $next"
