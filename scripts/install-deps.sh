#!/usr/bin/env bash
# Installs what Berth's tests need on a Debian bookworm machine with a running
# Docker Engine: redis-server, redis-sentinel and redis-cli (Debian; the
# store's high-availability tests start a Sentinel set and a Redis Cluster,
# which redis-cli creates), and the Docker Compose v2 plugin
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

redis_pkgs=()
command -v redis-server >/dev/null 2>&1 || redis_pkgs+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || redis_pkgs+=(redis-sentinel)
command -v redis-cli >/dev/null 2>&1 || redis_pkgs+=(redis-tools)
if [ "${#redis_pkgs[@]}" -gt 0 ]; then
	echo "== installing ${redis_pkgs[*]}"
	apt_update
	DEBIAN_FRONTEND=noninteractive retry apt-get install -y -qq "${redis_pkgs[@]}" >/dev/null
fi
# The tests start their own redis-server and redis-sentinel processes; the
# packaged services are not needed (and would hold ports 6379 and 26379).
if command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now redis-server redis-sentinel >/dev/null 2>&1 || true
fi
for svc in redis-server redis-sentinel; do
	if [ -x "/etc/init.d/$svc" ]; then "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
done

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
