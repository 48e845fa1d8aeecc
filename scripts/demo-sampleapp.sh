#!/usr/bin/env bash
# Prepares the walk-through's demo project: the sample app (testdata/sampleapp,
# a FROM-scratch image with a static Go binary, so nothing is pulled) copied
# to a workspace and a production directory, and brought up with
# docker compose under the project name "demo".
# "down" removes it again: its containers, networks and volumes, its image
# and the release tags Berth made of it, and both directories (unregister the
# project first: publisher config.delete demo --yes).
# Usage: scripts/demo-sampleapp.sh [up|down] [base-dir]   (default up /tmp/berth-demo)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
mode=up
case ${1:-} in up | down) mode=$1; shift ;; esac
base=${1:-/tmp/berth-demo}
if [ "$mode" = down ]; then
	if [ -f "$base/production/compose.yml" ]; then
		docker compose -p demo --project-directory "$base/production" -f "$base/production/compose.yml" down --volumes --rmi all --remove-orphans
	fi
	docker image ls --format '{{.Repository}}:{{.Tag}}' 'berth-release/demo' | xargs -r docker image rm
	rm -rf "$base"
	echo "demo project removed"
	exit 0
fi
mkdir -p "$base/workspace" "$base/production"
for d in workspace production; do
	cp "$repo"/testdata/sampleapp/{compose.yml,Dockerfile,version.txt} "$base/$d/"
	CGO_ENABLED=0 go -C "$repo" build -o "$base/$d/app" ./testdata/sampleapp/server
done
docker compose -p demo --project-directory "$base/production" -f "$base/production/compose.yml" up -d --build --wait --wait-timeout 60
echo "demo project is up: workspace $base/workspace, production $base/production"
