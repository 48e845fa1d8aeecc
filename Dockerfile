# syntax=docker/dockerfile:1
#
# The Berth worker as a container image (docs/running.md):
#
#   docker build -t berth-worker .
#   docker run -d --name berth-worker \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /srv/apps:/srv/apps -v berth-state:/var/lib/berth \
#     -e BERTH_NATS_URL=nats://nats.internal:4222 -e BERTH_REDIS_URL=redis://redis.internal:6379/0 \
#     -e BERTH_ROOTS=/srv/apps berth-worker
#
# Two stages: a Go builder, and a runtime that holds what the worker execs.

ARG GO_VERSION=1.26

# --- build: static binaries, no cgo, no local paths in them ---
FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags="-s -w" -o /out/berth-worker ./cmd/worker \
 && go build -trimpath -ldflags="-s -w" -o /out/publisher ./cmd/publisher

# --- runtime ---
# The worker execs `docker compose` (config, build, pull, up, …), so the
# runtime needs the docker CLI and the Compose v2 plugin; scratch or
# distroless-static cannot run them. docker:28-cli is the Docker project's
# own CLI image: Alpine with the static docker CLI 28, and the compose and
# buildx plugins already installed in /usr/local/libexec/docker/cli-plugins
# (buildx is what `docker compose build` uses), plus ca-certificates and
# git (build contexts given as git URLs). One base, maintained upstream,
# instead of assembling the CLI and plugins by hand; the build checks
# below fail the image if a later tag drops a plugin.
FROM docker:28-cli

RUN docker --version && docker compose version && docker buildx version

# A non-root user. Its group does not grant Docker access by itself: run
# the container with --group-add <gid of /var/run/docker.sock> (compose.yml
# does it with DOCKER_GID). The image's own "docker" group (2375) rarely
# matches the host's.
ARG BERTH_UID=10001
ARG BERTH_GID=10001
RUN addgroup -S -g "${BERTH_GID}" berth \
 && adduser -S -D -H -u "${BERTH_UID}" -G berth -h /var/lib/berth -s /sbin/nologin berth \
 && mkdir -p /var/lib/berth/docker \
 && chown -R berth:berth /var/lib/berth \
 && chmod 0750 /var/lib/berth

COPY --from=build /out/berth-worker /out/publisher /usr/local/bin/

# State (releases, journals) in /var/lib/berth: mount a volume there.
# DOCKER_CONFIG keeps the docker CLI's files (buildx state, registry
# logins) in the state volume, writable by the berth user.
ENV BERTH_STATE_DIR=/var/lib/berth \
    DOCKER_CONFIG=/var/lib/berth/docker \
    HOME=/var/lib/berth \
    BERTH_LOG_FORMAT=json
VOLUME ["/var/lib/berth"]

USER berth:berth
WORKDIR /var/lib/berth
# The image's docker-entrypoint.sh is for the docker CLI: not used.
ENTRYPOINT ["/usr/local/bin/berth-worker"]
STOPSIGNAL SIGTERM
