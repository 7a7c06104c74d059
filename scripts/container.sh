#!/usr/bin/env bash
# Builds and runs the Trellis container image with podman, daemonless, the way CI and
# test/container/image.test.ts do it:
#
#   scripts/container.sh base            # localhost/trellis-base: Debian bookworm from debootstrap
#   scripts/container.sh build [IMAGE]   # the Containerfile on that base (default localhost/trellis:dev)
#   scripts/container.sh podman ARGS…    # podman with the settings below (run, rm, logs, inspect…)
#
# There is no Docker Hub here (only the package registries and Debian's mirror), so the base image
# is made from a debootstrap rootfs, cached in .cache/container/ (gitignored), and given to the
# Containerfile as BASE; users building on a normal machine get debian:bookworm-slim instead.
# The settings work in a VM without CAP_SYS_RESOURCE and with hybrid cgroups (this sandbox and
# CI): runc (crun refuses hybrid cgroups), cgroupfs, file events, limits no higher than the
# host's, and an image store of its own under .cache/container/storage.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="$ROOT/.cache/container"
BASE_IMAGE="${TRELLIS_BASE_IMAGE:-localhost/trellis-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$CACHE"

cat > "$CACHE/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$CACHE/containers.conf"

podman_() {
  podman --root "$CACHE/storage" --runroot /run/trellis-containers --storage-driver overlay "$@"
}

# A minimal Debian rootfs as an image, without the parts an image does not need (docs, apt lists).
build_base() {
  if podman_ image exists "$BASE_IMAGE"; then return 0; fi
  local tarball="$CACHE/rootfs-bookworm.tar"
  if [ ! -s "$tarball" ]; then
    local rootfs="$CACHE/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
      "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
  fi
  podman_ import --change 'CMD ["/bin/bash"]' "$tarball" "$BASE_IMAGE" >/dev/null
}

build_image() {
  local image="${1:-localhost/trellis:dev}"
  local commit
  commit="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit-dirty"; fi
  build_base
  # The web UI's bundle is built on the host (its tools are development dependencies the image
  # does not need) and copied in.
  [ -f "$ROOT/dist/ui/index.html" ] || (cd "$ROOT" && npm run build)
  # Behind a TLS-inspecting proxy (this sandbox) npm ci in the build needs the host's CA bundle.
  local ca="${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}"
  local secret=()
  if [ -s "$ca" ]; then secret=(--secret "id=ca,src=$ca"); fi
  # docker format: the OCI image format has no HEALTHCHECK. chroot isolation: RUN steps need no
  # OCI runtime. Host network: npm ci reaches the npm registry.
  podman_ build --format docker --isolation chroot --network host \
    --build-arg "BASE=$BASE_IMAGE" --build-arg "COMMIT=$commit" "${secret[@]}" \
    -t "$image" -f "$ROOT/Containerfile" "$ROOT"
}

case "${1:-}" in
  base) build_base ;;
  build) shift; build_image "$@" ;;
  podman) shift; podman_ "$@" ;;
  *) echo "usage: $0 base | build [IMAGE] | podman ARGS…" >&2; exit 2 ;;
esac
