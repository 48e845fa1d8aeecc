#!/usr/bin/env bash
# Installs what Berth's tests need on a Debian bookworm machine with a running
# Docker Engine: redis-server (Debian), and the Docker Compose v2 plugin
# (bookworm ships only the old Python docker-compose 1.29, so the plugin is
# taken from Debian trixie's docker-compose package, which depends only on
# libc6, through a private apt list that leaves the system's sources alone).
# NATS needs no install: the tests run nats-server in-process from its Go
# module. Run as root. Idempotent.
set -euo pipefail

retry() {
	local n=0
	until "$@"; do
		n=$((n + 1))
		if [ "$n" -ge 3 ]; then return 1; fi
		echo "retrying: $*" >&2
		sleep 5
	done
}

apt_updated=
apt_update() {
	if [ -z "$apt_updated" ]; then
		retry apt-get update -qq
		apt_updated=1
	fi
}

if ! command -v redis-server >/dev/null 2>&1; then
	echo "== installing redis-server"
	apt_update
	DEBIAN_FRONTEND=noninteractive retry apt-get install -y -qq redis-server >/dev/null
fi
# The tests start their own redis-server processes; the packaged service is
# not needed.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi

# System-wide plugin directory, independent of $HOME; DOCKER_CONFIG overrides.
if [ -n "${DOCKER_CONFIG:-}" ]; then
	plugin_dir="$DOCKER_CONFIG/cli-plugins"
else
	plugin_dir=/usr/local/lib/docker/cli-plugins
fi
if ! docker compose version >/dev/null 2>&1; then
	echo "== installing the Docker Compose v2 plugin from Debian trixie"
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	mkdir -p "$work/lists/partial" "$work/dl"
	cat >"$work/trixie.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	apt_opts=(-o "Dir::Etc::SourceList=$work/trixie.sources" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root)
	retry apt-get "${apt_opts[@]}" update -qq
	(cd "$work/dl" && retry apt-get "${apt_opts[@]}" download docker-compose >/dev/null)
	dpkg -x "$work"/dl/docker-compose_*.deb "$work/x"
	mkdir -p "$plugin_dir"
	install -m 0755 "$work/x/usr/libexec/docker/cli-plugins/docker-compose" "$plugin_dir/docker-compose"
fi
docker compose version
