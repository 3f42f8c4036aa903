#!/usr/bin/env bash
# A local container image for CI, built from a debootstrap rootfs: no registry is ever asked.
#
#   .ci/image.sh docker   import it into the Docker daemon at $DOCKER_HOST (.ci/dockerd.sh start)
#   .ci/image.sh podman   import it into podman's storage
#   .ci/image.sh tar      only make the rootfs tarball
# prints the image reference (localhost/pysockopt-ci-bookworm:KEY), or the tarball's path.
#
# The rootfs: Debian $SUITE (bookworm) minbase plus IMAGE_PACKAGES (comma separated; default
# python3-minimal), made by debootstrap and kept as a tarball in
# $PYSOCKOPT_CI_CACHE/image (default /var/cache/pysockopt-ci): rebuilt when missing or when its
# inputs (suite, mirror, packages) change, which also changes KEY. ~3 min from nothing,
# seconds when cached (importing: ~6 s). A Dockerfile can start `FROM` the printed reference.
# Installs debootstrap when missing.
set -euo pipefail
CACHE=${PYSOCKOPT_CI_CACHE:-/var/cache/pysockopt-ci}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
IMAGE_PACKAGES=${IMAGE_PACKAGES:-python3-minimal}
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$IMAGE_PACKAGES" | sha256sum | cut -c1-12)
DIR=$CACHE/image
TAR=$DIR/rootfs-$key.tar
REF=localhost/pysockopt-ci-$SUITE:$key
mkdir -p "$DIR/debs"

if [ ! -s "$TAR" ]; then
  if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
  fi
  root=$(mktemp -d "$DIR/rootfs.XXXXXX")
  echo "image.sh: debootstrap $SUITE (+ $IMAGE_PACKAGES) -> $TAR" >&2
  if ! debootstrap --variant=minbase --include="$IMAGE_PACKAGES" --cache-dir="$DIR/debs" \
         "$SUITE" "$root" "$MIRROR" > "$DIR/debootstrap.log" 2>&1; then
    tail -20 "$DIR/debootstrap.log" >&2
    rm -rf "$root"
    exit 1
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar --numeric-owner -C "$root" -cf "$TAR.tmp" .
  mv "$TAR.tmp" "$TAR"
  rm -rf "$root"
  # older tarballs of other inputs are not needed any more
  find "$DIR" -maxdepth 1 -name 'rootfs-*.tar' ! -name "rootfs-$key.tar" -delete
fi

case "${1:-tar}" in
  tar) echo "$TAR" ;;
  docker)
    docker=/usr/bin/docker; [ -x "$docker" ] || docker=docker   # Debian's docker.io client
    if ! "$docker" image inspect "$REF" >/dev/null 2>&1; then
      "$docker" import "$TAR" "$REF" >/dev/null
    fi
    echo "$REF"
    ;;
  podman)
    if ! podman image exists "$REF"; then
      podman import "$TAR" "$REF" >/dev/null
    fi
    echo "$REF"
    ;;
  *) echo "usage: .ci/image.sh docker|podman|tar" >&2; exit 2 ;;
esac
