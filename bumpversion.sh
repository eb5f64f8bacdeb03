#!/usr/bin/env bash
# Bump the version: ./bumpversion.sh major|minor|patch
# Keeps setup.py, operator_service/__init__.py and .bumpversion.cfg in step.
set -euo pipefail
cd "$(dirname "$0")"

part="${1:-}"
case "$part" in
  major|minor|patch) ;;
  *) echo "usage: $0 major|minor|patch" >&2; exit 2 ;;
esac

current=$(sed -n 's/^current_version = //p' .bumpversion.cfg)
IFS=. read -r major minor patch <<<"$current"
case "$part" in
  major) major=$((major + 1)); minor=0; patch=0 ;;
  minor) minor=$((minor + 1)); patch=0 ;;
  patch) patch=$((patch + 1)) ;;
esac
next="$major.$minor.$patch"

for file in setup.py operator_service/__init__.py; do
  grep -q "\"$current\"" "$file" || { echo "$file does not hold version $current" >&2; exit 1; }
done
sed -i "s/^current_version = $current\$/current_version = $next/" .bumpversion.cfg
sed -i "s/version=\"$current\"/version=\"$next\"/" setup.py
sed -i "s/__version__ = \"$current\"/__version__ = \"$next\"/" operator_service/__init__.py
echo "$current -> $next"
