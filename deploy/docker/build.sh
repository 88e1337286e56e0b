#!/usr/bin/env bash
# Builds the Airlock container images without a Docker engine: Debian's
# buildah (vfs storage, chroot isolation, as root) from a Debian 12 base image
# made here with debootstrap (minbase). One image per Containerfile target:
#
#   localhost/airlock/{intake,credstore,executor,relay,gateway}:TAG
#
# Usage: deploy/docker/build.sh [--work DIR] [--tag TAG] [--git REV] [--push REGISTRY] [TARGET...]
#   --work DIR       buildah storage, the debootstrap tree and logs
#                    (default $AIRLOCK_IMAGE_WORK or build-images/ in the checkout)
#   --tag TAG        image tag (default: appVersion of helm/airlock/Chart.yaml)
#   --git REV        build the sources of commit REV (git archive) instead of
#                    the working tree
#   --push REGISTRY  also push each image to REGISTRY/airlock/<target>:TAG
#                    (buildah push; credentials from buildah login)
#   TARGET...        a subset of the targets (default: all five)
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian).
#
# The base is made once per work directory (debootstrap, then buildah from
# scratch + add + commit) and reused; the build stage is cached between
# targets (buildah bud --layers). Needs root, buildah and debootstrap
# (scripts/install-deps.sh). Prints one line per image: name, id, size.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${AIRLOCK_IMAGE_WORK:-$ROOT/build-images}
TAG=""
PUSH=""
REV=""
TARGETS=()
while (($#)); do
  case $1 in
    --work) WORK=$2; shift ;;
    --tag) TAG=$2; shift ;;
    --push) PUSH=$2; shift ;;
    --git) REV=$2; shift ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGETS+=("$1") ;;
  esac
  shift
done
ALL=(intake credstore executor relay gateway)
((${#TARGETS[@]})) || TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || { echo "build.sh: unknown target $t (one of ${ALL[*]})" >&2; exit 2; }
done
[[ -n $TAG ]] || TAG=$(sed -nE 's/^appVersion: *"?([^"]+)"?$/\1/p' "$ROOT/helm/airlock/Chart.yaml")
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ((EUID != 0)); then
  echo "build.sh: must run as root (debootstrap, buildah with chroot isolation)" >&2
  exit 1
fi
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is not installed (scripts/install-deps.sh)" >&2; exit 1; }
done

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOG=$WORK/logs
mkdir -p "$LOG"
B=(buildah --root "$WORK/storage" --runroot "$WORK/runroot" --storage-driver vfs)
BASE=localhost/airlock-debian:12

# ---- the base image: debootstrap minbase, imported with buildah ----
if ! "${B[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  echo "base: debootstrap bookworm (minbase) from $MIRROR ..." >&2
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$LOG/debootstrap.log" 2>&1 ||
    { tail -n 20 "$LOG/debootstrap.log" >&2; exit 1; }
  # apt sources for the stages' apt-get; no package lists or caches in the image
  echo "deb $MIRROR bookworm main" >"$WORK/rootfs/etc/apt/sources.list"
  echo "deb $MIRROR bookworm-updates main" >>"$WORK/rootfs/etc/apt/sources.list"
  echo "deb http://deb.debian.org/debian-security bookworm-security main" >>"$WORK/rootfs/etc/apt/sources.list"
  rm -rf "$WORK/rootfs/var/lib/apt/lists/"* "$WORK/rootfs/var/cache/apt/"*.bin \
    "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/log/"*
  tar -C "$WORK/rootfs" --numeric-owner -cf "$WORK/rootfs.tar" .
  ctr=$("${B[@]}" from scratch)
  "${B[@]}" add "$ctr" "$WORK/rootfs.tar" / >/dev/null
  "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/bash --label org.opencontainers.image.description="Debian 12 minbase (debootstrap)" \
    "$ctr" >/dev/null
  "${B[@]}" commit --quiet "$ctr" "$BASE" >/dev/null
  "${B[@]}" rm "$ctr" >/dev/null
  rm -rf "$WORK/rootfs" "$WORK/rootfs.tar"
fi

# ---- the build context: the working tree, or commit REV ----
CONTEXT=$ROOT
if [[ -n $REV ]]; then
  CONTEXT=$WORK/src
  rm -rf "$CONTEXT"
  mkdir -p "$CONTEXT"
  git -C "$ROOT" archive "$REV" | tar -x -C "$CONTEXT" ||
    { echo "build.sh: git archive $REV failed" >&2; exit 1; }
fi

# ---- one image per target ----
for t in "${TARGETS[@]}"; do
  img=localhost/airlock/$t:$TAG
  echo "image: $img ..." >&2
  if ! "${B[@]}" bud --isolation chroot --layers --quiet \
      --ignorefile "$ROOT/deploy/docker/containerignore" \
      -f "$ROOT/deploy/docker/Containerfile" --build-arg BASE="$BASE" \
      --target "$t" -t "$img" "$CONTEXT" >"$LOG/$t.log" 2>&1; then
    echo "build.sh: building $t failed; last lines of $LOG/$t.log:" >&2
    tail -n 30 "$LOG/$t.log" >&2
    exit 1
  fi
  "${B[@]}" images --noheading --format "$img {{.ID}} {{.Size}}" "$img"
  if [[ -n $PUSH ]]; then
    "${B[@]}" push "$img" "docker://$PUSH/airlock/$t:$TAG" >"$LOG/$t.push.log" 2>&1 ||
      { echo "build.sh: pushing $t failed: $(tail -n 3 "$LOG/$t.push.log")" >&2; exit 1; }
  fi
done
