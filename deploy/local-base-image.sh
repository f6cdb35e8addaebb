#!/usr/bin/env bash
# Builds a local Debian bookworm + python3 base image, for machines that reach Debian's
# package mirror and PyPI but no container registry (so `python:3.12-slim` cannot be
# pulled). Build the project's image on it with `--build-arg BASE_IMAGE=<the tag>`.
#
# Usage: deploy/local-base-image.sh [TAG]   (default TAG: localhost/okr-sync-base:bookworm-2)
# Needs root (debootstrap), podman, and debootstrap; on Debian/Ubuntu it installs the
# missing ones with apt-get. Prints the tag on its last line. Reuses the image when it
# already exists (delete it with `podman rmi TAG` to rebuild), so CI pays once per machine.
set -euo pipefail
# The suffix is this recipe's version: bump it when the recipe changes, so machines that
# cached the previous base build the new one.
tag=${1:-localhost/okr-sync-base:bookworm-2}
need() { command -v "$1" >/dev/null 2>&1; }
if ! need podman || ! need buildah || ! need debootstrap; then
  if ! need apt-get; then
    echo "local-base-image: needs podman, buildah and debootstrap (no apt-get to install them)" >&2
    exit 1
  fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap >/dev/null
fi
if podman image exists "$tag"; then echo "$tag"; exit 0; fi
# The Debian mirror this machine's apt already uses (a local mirror or proxy where the
# public one is unreachable); override with MIRROR=...
mirror=${MIRROR:-$({ cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } \
         | awk '$1 ~ /^(URIs:|deb)$/ && $2 !~ /security/ {print $2; exit}')}
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# minbase: the smallest system apt can manage; python3-venv for the image's /opt/venv,
# ca-certificates for pip over TLS.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root/fs" "$mirror" >/dev/null
# Downloaded packages, package lists, docs and man pages are not needed at run time.
rm -rf "$root"/fs/var/cache/apt/archives/*.deb "$root"/fs/var/lib/apt/lists/* \
  "$root"/fs/var/cache/apt/*.bin "$root"/fs/usr/share/doc/* "$root"/fs/usr/share/man/*
tar -C "$root/fs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "$tag"
