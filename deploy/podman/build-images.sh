#!/bin/sh
# `make images`: the Dockerfile's targets built with podman exactly as `docker build`
# would (the same Dockerfile; --format docker keeps HEALTHCHECK, which OCI drops).
#
#   deploy/podman/build-images.sh [TARGET...]      default: gateway worker-cpu
#
# Environment (all optional; the Makefile passes its variables of the same names):
#   GMAIVL_TAG     image tag (dev)                   IMAGE_PREFIX  localhost/gmai-vl-
#   PYTHON_IMAGE   the Python base; when unset, the registry's python:3.11-slim-bookworm,
#                  or where no registry can be reached a Debian base built here with
#                  debootstrap (debian-base.sh + python.Containerfile)
#   TORCH_WHEELS   a directory with torch's CPU wheel, bind-mounted into the build
#                  (default: pip's find-links directory if it holds torch 2.13.0+cpu);
#                  empty: PyTorch's CPU index
#   CA_BUNDLE      a CA bundle given to pip as a build secret (default: the system's)
#   SUPPORT_IMAGES also build Redis and Orthanc from Debian's packages when their
#                  registry images cannot be pulled (1, the default; 0 to skip)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tag=${GMAIVL_TAG:-dev}
prefix=${IMAGE_PREFIX:-localhost/gmai-vl-}
targets=${*:-gateway worker-cpu}
ca=${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
local_python=localhost/gmai-vl-python:3.11-bookworm

log() { printf '== %s\n' "$*" >&2; }

pullable() {  # an image here already, or pullable now
    podman image exists "$1" || podman pull -q "$1" >/dev/null 2>&1
}

secret_args=""
if [ -n "$ca" ] && [ -s "$ca" ]; then
    secret_args="--secret id=ca,src=$ca"
fi

if [ -z "${PYTHON_IMAGE:-}" ]; then
    if pullable docker.io/library/python:3.11-slim-bookworm; then
        PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm
    else
        log "no registry: a Debian 12 base from Debian's packages ($local_python)"
        if ! podman image exists "$local_python"; then
            "$here/debian-base.sh" localhost/debian:bookworm-debootstrap >/dev/null
            # shellcheck disable=SC2086
            podman build --format docker $secret_args -f "$here/python.Containerfile" \
                -t "$local_python" "$here"
        fi
        PYTHON_IMAGE=$local_python
    fi
fi

if [ -z "${TORCH_WHEELS+set}" ]; then
    TORCH_WHEELS=""
    for dir in $(pip config get global.find-links 2>/dev/null || true); do
        if ls "$dir"/torch-2.13.0+cpu-cp311-*.whl >/dev/null 2>&1; then
            TORCH_WHEELS=$dir
            break
        fi
    done
fi
wheel_args=""
if [ -n "$TORCH_WHEELS" ]; then
    wheel_args="--volume $TORCH_WHEELS:/opt/torch-wheels:ro --build-arg TORCH_FIND_LINKS=/opt/torch-wheels"
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -n 1)
for target in $targets; do
    extra=""
    if [ "$target" = worker ] && ! pullable docker.io/nvidia/cuda:12.9.1-base-ubuntu24.04; then
        log "no registry: the CUDA worker's steps run on $PYTHON_IMAGE (CUDA is exercised on GPU nodes only)"
        extra="--build-arg CUDA_IMAGE=$PYTHON_IMAGE"
    fi
    log "$prefix$target:$tag (base $PYTHON_IMAGE)"
    start=$(date +%s)
    # shellcheck disable=SC2086
    podman build --format docker --target "$target" -t "$prefix$target:$tag" \
        --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" --build-arg GMAIVL_VERSION="$version" \
        $secret_args $wheel_args $extra -f "$root/Dockerfile" "$root"
    log "$prefix$target:$tag built in $(($(date +%s) - start)) s"
done

if [ "${SUPPORT_IMAGES:-1}" = 1 ]; then
    for pair in "redis:docker.io/library/redis:7.4-alpine" "orthanc:docker.io/orthancteam/orthanc:25.7.0"; do
        name=${pair%%:*}
        upstream=${pair#*:}
        if pullable "$upstream"; then
            continue
        fi
        log "no registry: $prefix$name-debian:$tag from Debian's packages"
        "$here/debian-base.sh" localhost/debian:bookworm-debootstrap >/dev/null
        podman build --format docker --build-arg DEBIAN_IMAGE=localhost/debian:bookworm-debootstrap \
            -t "$prefix$name-debian:$tag" -f "$here/$name.Containerfile" "$here"
    done
fi
