#!/bin/sh
# A Debian 12 image made from Debian's packages, for machines that cannot reach
# an image registry: debootstrap (minbase) into a directory, imported as an image.
#   deploy/podman/debian-base.sh [TAG]      (default localhost/debian:bookworm-debootstrap)
# Needs root, debootstrap and podman (CONTAINERS_CONF/CONTAINERS_STORAGE_CONF as
# the Makefile sets them). Idempotent: does nothing when TAG exists.
set -eu
tag=${1:-localhost/debian:bookworm-debootstrap}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if podman image exists "$tag"; then
    exit 0
fi
root=$(mktemp -d /var/tmp/debootstrap.XXXXXX)
chmod 0755 "$root"  # mktemp made it 0700: the image root must be traversable by every user
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
# The tree's apt caches and the host's resolver do not belong in an image.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/etc/resolv.conf
# A debootstrap tree has no PATH in its image config: podman kube play adds none.
tar -C "$root" --numeric-owner -c . \
    | podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "$tag"
