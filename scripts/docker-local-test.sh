#!/usr/bin/env bash
# Build and health-check the Docker image without pulling anything from a registry.
#
#   scripts/docker-local-test.sh            # hadolint, base image, build, run, wait for healthy
#   KEEP=1 scripts/docker-local-test.sh     # leave the container running afterwards
#
# Steps (docs/DOCKER.md explains each):
#   1. hadolint the Dockerfile (nothing at warning level allowed);
#   2. start dockerd when no daemon answers (stopped again at the end);
#   3. build a local stand-in for python:3.11-slim when it is missing: debootstrap
#      Debian bookworm (python 3.11) + python3-pip, imported with `docker import`;
#   4. serve a local torch wheel folder as a PEP 503 index (download.pytorch.org may
#      be unreachable) and build with --build-arg BASE_IMAGE/TORCH_INDEX_URL;
#   5. run the image and wait until Docker reports the HEALTHCHECK "healthy".
#
# Needs root (debootstrap, dockerd), apt access to deb.debian.org and pip access to PyPI.
# Environment: BASE_IMAGE (default local/python:3.11-slim), IMAGE (transformer-designer:local),
# TORCH_WHEEL_DIR (folder holding torch-2.13.0+cpu-*.whl; default /opt/wheels; empty = use
# download.pytorch.org), DEBIAN_MIRROR, PORT (host port, default 18501), HOST_CA_DIR (extra CA
# certificates baked into the local base image; default /usr/local/share/ca-certificates).
# Delete the base image (docker rmi local/python:3.11-slim) to rebuild it.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-local/python:3.11-slim}
IMAGE=${IMAGE:-transformer-designer:local}
TORCH_WHEEL_DIR=${TORCH_WHEEL_DIR-/opt/wheels}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PORT=${PORT:-18501}
WHEEL_PORT=${WHEEL_PORT:-18765}
HOST_CA_DIR=${HOST_CA_DIR:-/usr/local/share/ca-certificates}
NAME=designer-local-test
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}  # the classic builder needs no buildx plugin
WORK=$(mktemp -d)
STARTED_DOCKERD=""
HTTP_PID=""

log() { printf '\n== %s\n' "$*"; }
cleanup() {
  [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then docker rm -f "$NAME" >/dev/null 2>&1 || true; fi
  if [ -n "$STARTED_DOCKERD" ] && [ -z "${KEEP:-}" ]; then
    kill "$STARTED_DOCKERD" 2>/dev/null || true
    wait "$STARTED_DOCKERD" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

log "1. hadolint"
HADOLINT=$(command -v hadolint || echo .venv/bin/hadolint)
"$HADOLINT" Dockerfile
echo "hadolint: clean"

log "2. docker daemon"
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iptables; }
  dockerd >"$WORK/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { cat "$WORK/dockerd.log"; exit 1; }
fi
docker version --format 'client {{.Client.Version}}, server {{.Server.Version}}'

log "3. base image $BASE_IMAGE"
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap; }
  ROOTFS="$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates bookworm "$ROOTFS" "$DEBIAN_MIRROR"
  # Like python:3.11-slim: root may `pip install` into the system interpreter.
  rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
  # Trust this machine's extra CAs (a TLS-intercepting egress proxy in front of PyPI);
  # Debian's pip uses the system bundle.
  if compgen -G "$HOST_CA_DIR/*.crt" >/dev/null; then
    cp "$HOST_CA_DIR"/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" update-ca-certificates
  fi
  chroot "$ROOTFS" apt-get clean
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
  tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$BASE_IMAGE"
fi
docker run --rm "$BASE_IMAGE" python --version

log "4. build $IMAGE"
BUILD_ARGS=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
if [ -n "$TORCH_WHEEL_DIR" ]; then
  WHEEL=$(ls "$TORCH_WHEEL_DIR"/torch-2.13.0*cp311*x86_64.whl | head -1)
  mkdir -p "$WORK/index/simple/torch"
  ln -s "$WHEEL" "$WORK/index/simple/torch/"
  printf '<!DOCTYPE html><html><body><a href="%s">%s</a></body></html>\n' "$(basename "$WHEEL")" "$(basename "$WHEEL")" \
    >"$WORK/index/simple/torch/index.html"
  python3 -m http.server "$WHEEL_PORT" --bind 127.0.0.1 --directory "$WORK/index" >"$WORK/http.log" 2>&1 &
  HTTP_PID=$!
  sleep 1
  # torch from the local index; its dependencies (sympy, networkx, ...) from PyPI.
  BUILD_ARGS+=(--network host
               --build-arg "TORCH_INDEX_URL=http://127.0.0.1:$WHEEL_PORT/simple"
               --build-arg "TORCH_EXTRA_INDEX_URL=https://pypi.org/simple")
fi
CONTEXT=.
if [ ! -f app/main.py ]; then
  # The app is still being written: build from a copy with a placeholder page.
  CONTEXT="$WORK/context"
  mkdir -p "$CONTEXT"
  cp -r Dockerfile .dockerignore requirements.txt pyproject.toml backend app presets "$CONTEXT"/
  printf 'import streamlit as st\n\nst.title("transformer designer (placeholder)")\n' >"$CONTEXT/app/main.py"
  echo "app/main.py missing: building with a placeholder page"
fi
start=$(date +%s)
docker build "${BUILD_ARGS[@]}" -t "$IMAGE" "$CONTEXT"
echo "built in $(( $(date +%s) - start )) s; size $(docker image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"

log "5. run and wait for the HEALTHCHECK"
docker rm -f "$NAME" >/dev/null 2>&1 || true
docker run -d --name "$NAME" -p "127.0.0.1:$PORT:8501" "$IMAGE" >/dev/null
docker exec "$NAME" sh -c 'id -u; python -c "import backend, torch; print(\"torch\", torch.__version__)"; command -v dot'
status=starting
for _ in $(seq 120); do
  status=$(docker inspect "$NAME" --format '{{.State.Health.Status}}')
  [ "$status" = healthy ] || [ "$status" = unhealthy ] && break
  [ "$(docker inspect "$NAME" --format '{{.State.Running}}')" = true ] || break
  sleep 2
done
echo "health: $status"
docker inspect "$NAME" --format '{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{"\n"}}{{end}}' | tail -3
curl -fsS "http://127.0.0.1:$PORT/_stcore/health" && echo " <- /_stcore/health from the host"
if [ "$status" != healthy ]; then docker logs "$NAME" | tail -30; exit 1; fi
echo "OK: $IMAGE is healthy"
