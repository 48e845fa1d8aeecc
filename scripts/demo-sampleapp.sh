#!/usr/bin/env bash
# Prepares the walk-through's demo project: the sample app (testdata/sampleapp,
# a FROM-scratch image with a static Go binary, so nothing is pulled) copied
# to a workspace and a production directory, and brought up with
# docker compose under the project name "demo".
# Usage: scripts/demo-sampleapp.sh [base-dir]   (default /tmp/berth-demo)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
base=${1:-/tmp/berth-demo}
mkdir -p "$base/workspace" "$base/production"
for d in workspace production; do
	cp "$repo"/testdata/sampleapp/{compose.yml,Dockerfile,version.txt} "$base/$d/"
	CGO_ENABLED=0 go -C "$repo" build -o "$base/$d/app" ./testdata/sampleapp/server
done
docker compose -p demo --project-directory "$base/production" -f "$base/production/compose.yml" up -d --build --wait --wait-timeout 60
echo "demo project is up: workspace $base/workspace, production $base/production"
