#!/usr/bin/env bash
# Build the base image `debian:bookworm-slim` locally from Debian's packages,
# for hosts that reach no container registry (air-gapped sites, this project's CI).
#
#   docker/build-base-image.sh            # skips when the image already exists
#   docker/build-base-image.sh --force    # rebuild and re-tag it
#
# It runs `debootstrap --variant=minbase bookworm` into a temp dir, trims it the
# way the official slim image is trimmed (no docs, man pages or apt lists; the
# same apt/dpkg settings for containers) and imports it with `docker import`.
# Needs root (debootstrap) and a running engine (see docker/start-engine.sh).
#
# Environment:
#   BASE_IMAGE     tag to create (default debian:bookworm-slim)
#   DEBIAN_MIRROR  mirror URL (default: the one this host's apt uses, else deb.debian.org)
#   DEBIAN_SECURITY_MIRROR  security mirror (default: the host's, else deb.debian.org)
set -euo pipefail

IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
SUITE=bookworm
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build-base-image: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
export PATH="$PATH:/usr/sbin:/sbin"
if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi

if [ "$FORCE" = 0 ] && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "build-base-image: $IMAGE already exists (use --force to rebuild)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "build-base-image: debootstrap needs root" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "build-base-image: installing debootstrap with apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

# The first URI this host's apt uses for a suite matching $1 (deb822 .sources
# files and one-line .list files both count). Empty when none is found.
host_mirror() {
  local want="$1" files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ "${#files[@]}" -gt 0 ] || return 0
  awk -v want="$want" '
    # one-line format: deb [opts] URI SUITE COMPONENTS...
    /^[[:space:]]*deb[[:space:]]/ {
      n = split($0, f, /[[:space:]]+/); i = 2
      while (i <= n && (f[i] == "" || f[i] ~ /^\[/)) {
        if (f[i] ~ /^\[/) { while (i <= n && f[i] !~ /\]$/) i++ }
        i++
      }
      if (f[i + 1] == want) { print f[i]; exit }
      next
    }
    # deb822 format: stanzas separated by blank lines
    /^[[:space:]]*$/ { if (types ~ /(^|[[:space:]])deb([[:space:]]|$)/ && suites ~ ("(^|[[:space:]])" want "([[:space:]]|$)") && uri != "") { print uri; exit } types = ""; suites = ""; uri = ""; next }
    /^Types:/  { types = $0; sub(/^Types:[[:space:]]*/, "", types) }
    /^Suites:/ { suites = $0; sub(/^Suites:[[:space:]]*/, "", suites) }
    /^URIs:/   { uri = $2 }
    END { if (types ~ /(^|[[:space:]])deb([[:space:]]|$)/ && suites ~ ("(^|[[:space:]])" want "([[:space:]]|$)") && uri != "") print uri }
  ' "${files[@]}" | head -n 1
}

MIRROR="${DEBIAN_MIRROR:-$(host_mirror "$SUITE")}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-$(host_mirror "$SUITE-security")}"
SECURITY="${SECURITY:-http://deb.debian.org/debian-security}"

WORK="$(mktemp -d /var/tmp/lfs-base-image.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
ROOTFS="$WORK/rootfs"
started=$(date +%s)
echo "build-base-image: debootstrap --variant=minbase $SUITE from $MIRROR"
if ! debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
  echo "build-base-image: debootstrap failed; last lines of its log:" >&2
  tail -n 25 "$WORK/debootstrap.log" >&2
  [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 25 "$ROOTFS/debootstrap/debootstrap.log" >&2
  exit 1
fi

# apt sources as in the official image (deb822, with updates and security).
rm -f "$ROOTFS/etc/apt/sources.list"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# Container settings of the official image (debuerreotype): no caches, no
# translations, compressed lists, no docs/man pages in later installs.
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages"
echo 'Acquire::GzipIndexes "true";' >"$ROOTFS/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$ROOTFS/etc/apt/apt.conf.d/docker-autoremove-suggests"
echo 'force-unsafe-io' >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF

# Trim what the slim image does not carry. /dev, /proc, /sys and the host
# files (/etc/hostname, /etc/hosts, /etc/resolv.conf) are provided by Docker.
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
  "$ROOTFS"/usr/share/groff/* "$ROOTFS"/usr/share/lintian/*
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
  "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old "$ROOTFS"/var/log/* "$ROOTFS/debootstrap"
rm -rf "$ROOTFS"/dev/* "$ROOTFS"/proc/* "$ROOTFS"/sys/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* "$ROOTFS"/run/*
: >"$ROOTFS/etc/hostname"
: >"$ROOTFS/etc/resolv.conf"
rm -f "$ROOTFS/etc/machine-id" && : >"$ROOTFS/etc/machine-id"

echo "build-base-image: importing as $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . |
  "$DOCKER" import -c 'CMD ["bash"]' -m "debootstrap --variant=minbase $SUITE from $MIRROR" - "$IMAGE" >/dev/null
size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
echo "build-base-image: built $IMAGE ($((size / 1000000)) MB) in $(($(date +%s) - started)) s"
