#!/bin/sh
# Prints the storage.conf podman should use here: overlay when this machine lets
# root mount an overlayfs (checked with a throwaway mount), else vfs.
here=$(cd "$(dirname "$0")" && pwd)
probe=$(mktemp -d /tmp/gmai-vl-overlay-probe.XXXXXX) || { echo "$here/storage-vfs.conf"; exit 0; }
mkdir "$probe/lower" "$probe/upper" "$probe/work" "$probe/merged"
if mount -t overlay overlay \
    -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" \
    2>/dev/null; then
    umount "$probe/merged"
    echo "$here/storage.conf"
else
    echo "$here/storage-vfs.conf"
fi
rm -rf "$probe"
