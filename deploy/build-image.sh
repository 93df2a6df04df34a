#!/usr/bin/env bash
# Build the video2mp3 image from deploy/Dockerfile, unchanged, with whatever this host can run:
#
#   deploy/build-image.sh [TAG]            build (default tag: video2mp3:latest); prints TAG last
#   deploy/build-image.sh engine ARGS...   run the container engine the way the build did
#   deploy/build-image.sh base             print the base image a build would use
#
# Docker (BuildKit) when its daemon answers, else podman (installed with apt-get when missing and
# run as root). For podman it detects, rather than assumes, what a locked-down host needs: rlimits
# that cannot be raised, an OCI runtime that cannot start containers here (crun on a mixed cgroup
# layout), and no reachable registry (the base is then made locally with debootstrap from the
# Debian mirror apt already uses). The host's CA bundle goes to the build as a secret, so builds
# behind a TLS-intercepting proxy work and the bundle never lands in a layer.
#
# Environment: CONTAINER_ENGINE (docker|podman), PYTHON_IMAGE (the base; default
# python:3.12-slim-bookworm), VIDEO2MP3_IMAGE_CACHE (default /var/cache/video2mp3-image: the
# stand-in base's root filesystem and podman's detected configuration live there).
set -euo pipefail
cd "$(dirname "$0")/.."

DEFAULT_BASE=python:3.12-slim-bookworm
STANDIN=localhost/video2mp3-python:bookworm
SUITE=bookworm
CACHE=${VIDEO2MP3_IMAGE_CACHE:-/var/cache/video2mp3-image}

say() { echo "build-image: $*" >&2; }
die() { say "$*"; exit 1; }

apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "please install: $*"
  say "installing $*"
  apt-get update -qq
  # With recommends: podman's are what a plain `apt-get install podman` (as tested) brings.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pick_engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then
    ENGINE=$CONTAINER_ENGINE
  elif command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
    ENGINE=docker
  else
    ENGINE=podman
    command -v podman >/dev/null || apt_install podman
  fi
  command -v "$ENGINE" >/dev/null || die "$ENGINE is not installed"
}

# ---- podman on a locked-down host: a containers.conf of our own, written once ------------------
PODMAN_CONF=$CACHE/containers.conf

# An rlimit podman would raise for containers (it asks for 1048576) but this process may not.
rlimit_is_capped() {
  local flag=$1 hard
  hard=$(ulimit -H "$flag")
  [ "$hard" != unlimited ] && ! (ulimit -H "$flag" $((hard + 1))) 2>/dev/null
}

write_podman_conf() {
  local runtime=$1 nofile=$2 nproc=$3 limits=()
  [ -z "$nofile" ] || limits+=("\"nofile=$nofile:$nofile\"")
  [ -z "$nproc" ] || limits+=("\"nproc=$nproc:$nproc\"")
  {
    echo "# Written by deploy/build-image.sh: what containers need to start on this host."
    echo "[containers]"
    [ ${#limits[@]} -eq 0 ] || (IFS=,; echo "default_ulimits = [${limits[*]}]")
    echo "[engine]"
    [ -z "$runtime" ] || echo "runtime = \"$runtime\""
  } >"$PODMAN_CONF"
}

podman_probe() {
  CONTAINERS_CONF=$PODMAN_CONF podman run --rm --network host "$1" true >/dev/null 2>&1
}

# Found by trying, smallest change first: some hosts let containers have less than their own
# hard limits (conmon may run with a lower nproc), and crun refuses some cgroup layouts (v1
# controllers beside a v2 mount) where runc copes.
configure_podman() {
  local base=$1 nofile="" nprocs=("") runtime nproc
  [ -s "$PODMAN_CONF" ] && return 0
  mkdir -p "$CACHE"
  rlimit_is_capped -n && nofile=$(ulimit -Hn)
  if rlimit_is_capped -u; then
    nprocs=()
    for nproc in "$(ulimit -Hu)" 65536 32768 16384 8192 4096; do
      [ "$nproc" -le "$(ulimit -Hu)" ] && nprocs+=("$nproc")
    done
  fi
  for runtime in "" runc; do
    if [ "$runtime" = runc ] && ! command -v runc >/dev/null; then apt_install runc; fi
    for nproc in "${nprocs[@]}"; do
      write_podman_conf "$runtime" "$nofile" "$nproc"
      if podman_probe "$base"; then
        say "podman here: runtime ${runtime:-default}, nofile ${nofile:-default}," \
          "nproc ${nproc:-default} ($PODMAN_CONF)"
        return 0
      fi
    done
  done
  rm -f "$PODMAN_CONF"
  die "podman cannot start a container here (tried its default runtime and runc)"
}

engine() {
  if [ "$ENGINE" = podman ] && [ -s "$PODMAN_CONF" ]; then
    CONTAINERS_CONF=$PODMAN_CONF podman "$@"
  else
    "$ENGINE" "$@"
  fi
}

# ---- the base: the registry's, or a stand-in made from Debian ---------------------------------
debian_mirror() {
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' \
    | tr ' ' '\n' | grep -v -e security -e '^$' | head -n1 || true)
  [ -n "$uri" ] || uri=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
    /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

make_standin() {
  local tarball=$CACHE/python-$SUITE-rootfs.tar
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || apt_install debootstrap
    local mirror rootfs
    mirror=$(debian_mirror)
    say "no registry: making a stand-in for $DEFAULT_BASE from $mirror ($SUITE)"
    mkdir -p "$CACHE"
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    # Python and pip, as the python:*-slim images have them (no compilers, no recommends).
    debootstrap --variant=minbase \
      --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
      "$SUITE" "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
      || { rm -rf "$rootfs"; die "debootstrap failed: see $CACHE/debootstrap.log"; }
    # Like the official images: pip installs into the system Python, and no package lists.
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    rm -rf "$rootfs"
    mv "$tarball.tmp" "$tarball"
  fi
  engine import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$tarball" "$STANDIN" >/dev/null
}

pick_base() {
  if [ -n "${PYTHON_IMAGE:-}" ]; then
    BASE=$PYTHON_IMAGE
    engine image inspect "$BASE" >/dev/null 2>&1 || engine pull -q "$BASE" >/dev/null \
      || die "cannot pull $BASE"
    return
  fi
  if engine image inspect "$DEFAULT_BASE" >/dev/null 2>&1 \
    || timeout 120 "$ENGINE" pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
    BASE=$DEFAULT_BASE
    return
  fi
  BASE=$STANDIN
  engine image inspect "$BASE" >/dev/null 2>&1 || make_standin
}

# ---- main -------------------------------------------------------------------------------------
pick_engine
case "${1:-}" in
  engine) shift; engine "$@"; exit ;;
esac

pick_base
[ "$ENGINE" = podman ] && configure_podman "$BASE"
[ "${1:-}" = base ] && { echo "$BASE"; exit; }

TAG=${1:-video2mp3:latest}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE=$(git config --get remote.origin.url 2>/dev/null || echo unknown)
args=(-f deploy/Dockerfile -t "$TAG"
  --build-arg "PYTHON_IMAGE=$BASE" --build-arg "VERSION=$VERSION"
  --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE")
CA_BUNDLE=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$CA_BUNDLE" ] && args+=(--secret "id=ca-certificates,src=$CA_BUNDLE")

say "building $TAG on $BASE with $ENGINE"
if [ "$ENGINE" = podman ]; then
  # --format docker keeps the HEALTHCHECK; this podman does not find the per-Dockerfile ignore
  # file by itself; the build needs only outbound access, so no container network is set up.
  engine build --format docker --layers --network host \
    --ignorefile deploy/Dockerfile.dockerignore "${args[@]}" . >&2
else
  DOCKER_BUILDKIT=1 engine build "${args[@]}" . >&2
fi
echo "$TAG"
