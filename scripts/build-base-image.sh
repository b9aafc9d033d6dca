#!/usr/bin/env bash
# Builds veil's base image locally from Debian packages, for machines that reach no container registry.
#
#   scripts/build-base-image.sh [--tag NAME] [--force]
#
# The result is Debian bookworm (debootstrap --variant=minbase, security updates applied) with what the
# appliance runs beside Node: iproute2 (ip, bridge), nftables (the vtep firewall), ethtool, procps
# (sysctl), util-linux (nsenter), etcd-server (the embedded store of a single host) and tini (PID 1).
# The Containerfile installs those itself when its base lacks them, so a registry's
# debian:bookworm-slim works as well: this image only makes the build work offline of any registry.
#
# Default tag: localhost/veil-base:bookworm (env VEIL_BASE_IMAGE). An existing image is kept unless --force.
# Needs root, debootstrap and podman (scripts/setup.sh installs them).
set -euo pipefail

TAG=${VEIL_BASE_IMAGE:-localhost/veil-base:bookworm}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Runtime packages of the appliance (keep in step with the Containerfile's RUNTIME_PACKAGES).
PACKAGES=iproute2,nftables,ethtool,procps,util-linux,etcd-server,tini,ca-certificates
force=0

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build-base-image: unknown argument $1" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || { echo "build-base-image: needs root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "build-base-image: debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }
command -v podman >/dev/null || { echo "build-base-image: podman not found (apt-get install podman)" >&2; exit 1; }

if [ "$force" = 0 ] && podman image exists "$TAG" 2>/dev/null; then
  echo "build-base-image: $TAG already exists (--force rebuilds it)"
  exit 0
fi

rootfs=$(mktemp -d -t veil-base-XXXXXX)
cleanup() {
  # /proc is mounted only while apt runs inside; never leave it mounted under a directory we delete.
  if mountpoint -q "$rootfs/proc"; then umount -l "$rootfs/proc"; fi
  rm -rf --one-file-system "$rootfs" "$rootfs.log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
echo "build-base-image: debootstrap $SUITE ($MIRROR) into $rootfs"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || {
  echo "build-base-image: debootstrap failed; last lines of its log:" >&2; tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1
}
rm -f "$rootfs.log"

# The same sources as Debian's own images: the suite, its updates and its security updates.
cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
# No daemon may start inside the chroot while packages upgrade.
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
mount -t proc proc "$rootfs/proc"
echo "build-base-image: applying updates"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get -o APT::Sandbox::User=root update && apt-get -y -o APT::Sandbox::User=root -o Dpkg::Options::=--force-confold upgrade && apt-get clean' \
  >"$rootfs.log" 2>&1 || {
  echo "build-base-image: apt-get upgrade failed; last lines of its log:" >&2; tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1
}
rm -f "$rootfs.log"
umount "$rootfs/proc"
rm -f "$rootfs/usr/sbin/policy-rc.d"

# Slim it like debian:*-slim: no package lists, caches, manuals or translations (copyright files stay).
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log \
  "$rootfs"/tmp/* "$rootfs"/root/.bash_history
find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
# The image's own resolver and hostname come from the engine at run time.
: > "$rootfs/etc/resolv.conf"
: > "$rootfs/etc/hostname"

echo "build-base-image: importing as $TAG"
tar -C "$rootfs" --numeric-owner --xattrs -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --message "veil base: debootstrap $SUITE minbase + $PACKAGES" \
  --quiet - "$TAG" >/dev/null
echo "build-base-image: $TAG built in $(( $(date +%s) - start ))s ($(podman image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
