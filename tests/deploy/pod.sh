#!/usr/bin/env bash
# Runs one workload of the rendered chart as a pod on this machine, the way
# the kubelet and a container runtime would lay it out, for
# tests/integration/helm.sh:
#
#   tests/deploy/pod.sh PLAN STATE BIN BINARY NETNS HOSTS [EXTRA-ARG...]
#
# PLAN is the output of `chart_checks.mjs podplan` (volumes already
# materialized under STATE/vol by it); BIN the directory of the service
# binaries and BINARY the one the container runs (they stand for the
# image's entrypoint); NETNS the network namespace the pod
# runs in ("-" for none); HOSTS the pod's /etc/hosts (cluster DNS of the
# test). EXTRA-ARGs are appended to the container's arguments
# (e.g. --check-config). POD_CGROUP=NAME gives the pod a cgroup of its own
# (cgroup v1; the caller removes it).
#
# The pod gets its own mount, pid and UTS namespaces (host name = pod name),
# a user namespace of 65536 ids when the plan says hostusers 0,
# and a root of its own: a
# tmpfs holding read-only binds of this machine's /usr, /bin, /lib* (the
# "image"), a small /etc, a fresh /proc, /sys (read-only unless privileged),
# a minimal /dev, the
# directory of the binaries (at /opt/airlock/bin), and the volumes at the container's mount paths;
# the root is read-only when readOnlyRootFilesystem says so. The init
# container runs first with its mounts, then the container: with the ids,
# supplementary groups (fsGroup), capability bounding set and no_new_privs
# of its securityContext (setpriv). The process's pid on this machine is
# written to STATE/pid before it starts. Exit status: the container's.
set -euo pipefail

if [[ ${1:-} != __inner ]]; then
  PLAN=$1 STATE=$2 BIN=$3 BINARY=$4 NETNS=$5 HOSTS=$6
  shift 6
  export POD_PLAN=$PLAN POD_STATE=$STATE POD_BIN=$BIN POD_BINARY=$BINARY POD_HOSTS=$HOSTS
  export POD_LIBDIR
  POD_LIBDIR=$(cd "$(dirname "$0")/../lib" && pwd)
  # hostUsers: false: the pod gets a user namespace of its own with 65536
  # ids (0..65535 inside -> POD_USERNS_BASE.. outside), and, as the kubelet
  # and runtime arrange, its volumes, its state and its (delegated) cgroup
  # owned by ids inside that range
  userns=() ubase=""
  if [[ $(sed -n 's/^hostusers //p' "$PLAN") == 0 ]]; then
    ubase=${POD_USERNS_BASE:-2000000000}
    userns=("$POD_LIBDIR/userns.py" "$ubase" 65536)
    while IFS= read -r -d '' f; do
      read -r u g < <(stat -c '%u %g' -- "$f")
      if ((u < 65536 && g < 65536)); then chown -h "$((ubase + u)):$((ubase + g))" -- "$f"; fi
    done < <(find "$STATE" -xdev -print0)
  fi
  # The pod's own cgroup in every hierarchy (what the kubelet gives each
  # pod): POD_CGROUP names it, under this process's cgroups. cgroup v1
  # hierarchies only; with the unified hierarchy the pod stays where it is.
  if [[ -n ${POD_CGROUP:-} && ! -e /sys/fs/cgroup/cgroup.controllers ]]; then
    while IFS=: read -r _ ctrls path; do
      # the controllers the sandbox uses; cpuset would need its cpus and mems set
      [[ ,$ctrls, =~ ,(memory|pids|cpu|cpuacct), && ,$ctrls, != *,cpuset,* ]] || continue
      mnt=$(awk -v c="$ctrls" '{ split($0, h, " - "); split(h[1], l, " "); split(h[2], r, " ")
             if (r[1] == "cgroup" && index("," r[3] ",", "," c ",")) { print l[4] " " l[5]; exit } }' \
        /proc/self/mountinfo)
      [[ -n $mnt ]] || continue
      root=${mnt%% *} mp=${mnt#* }
      dir=$mp${path#"${root%/}"}/$POD_CGROUP
      mkdir -p "$dir" && echo $$ >"$dir/cgroup.procs"
      # a delegated cgroup (POD_CGROUP_RW=1) of a user-namespaced pod: its root owns it
      if [[ -n $ubase && ${POD_CGROUP_RW:-0} == 1 ]]; then chown -R "$ubase:$ubase" "$dir"; fi
    done <<<"$(cat /proc/self/cgroup)" # read once: it changes as we move
  fi
  # nsenter, not "ip netns exec": that one remounts /sys, losing the
  # cgroup hierarchies mounted under it
  ns=()
  [[ $NETNS != - ]] && ns=(nsenter "--net=/run/netns/$NETNS")
  exec "${ns[@]}" "${userns[@]}" unshare --mount --pid --uts --fork --kill-child --propagation private \
    "$0" __inner "$@"
fi
shift

plan() { # KEY: the values of every line "KEY ..." of the plan
  sed -n "s/^$1 //p" "$POD_PLAN"
}

# The host pid of this process (the container process after the exec
# below): /proc is still this machine's, and the builtin read opens
# /proc/self from this very process.
mkdir -p "$POD_STATE"
read -r host_pid _ </proc/self/stat
echo "$host_pid" >"$POD_STATE/pid"

R=$POD_STATE/root
mkdir -p "$R"
mount -t tmpfs -o mode=0755,size=32m pod-root "$R"

# the image: this machine's userland, read-only
for e in usr bin sbin lib lib32 lib64 libx32; do
  if [[ -L /$e ]]; then
    cp -P "/$e" "$R/$e"
  elif [[ -d /$e ]]; then
    mkdir "$R/$e"
    mount --bind "/$e" "$R/$e"
    mount -o remount,bind,ro "$R/$e"
  fi
done
mkdir -p "$R/etc" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/run" "$R/var/lib" "$R/.oldroot"
for f in passwd group nsswitch.conf host.conf ld.so.cache ld.so.conf ld.so.conf.d ssl \
         alternatives localtime services protocols; do
  if [[ $f == ssl ]]; then # not its private/ (0700, and no image carries the host's keys)
    mkdir -p "$R/etc/ssl"
    find /etc/ssl -mindepth 1 -maxdepth 1 ! -name private -exec cp -a --no-preserve=ownership {} "$R/etc/ssl/" \;
  elif [[ -e /etc/$f ]]; then
    cp -a --no-preserve=ownership "/etc/$f" "$R/etc/"
  fi
done
cp "$POD_HOSTS" "$R/etc/hosts"
: >"$R/etc/resolv.conf" # every name the pods use is in /etc/hosts
plan hostname >"$R/etc/hostname"
hostname "$(plan hostname)"
mount -t proc proc "$R/proc"
# /sys with the cgroup hierarchies, read-only as a runtime gives it to a
# container that is not privileged; POD_CGROUP_RW=1 leaves the cgroups
# writable (a runtime that delegates the container's cgroup)
mount --rbind /sys "$R/sys"
if [[ $(plan caps) != all ]]; then
  while read -r mp; do
    [[ ${POD_CGROUP_RW:-0} == 1 && $mp == "$R/sys/fs/cgroup"* ]] && continue
    mount -o remount,bind,ro "$mp" 2>/dev/null || true
  done < <(awk -v r="$R/sys" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo)
fi
mount -t tmpfs -o mode=0755,size=1m pod-dev "$R/dev"
for d in null zero full random urandom tty; do
  touch "$R/dev/$d"
  mount --bind "/dev/$d" "$R/dev/$d"
done
mkdir -p "$R/dev/shm" "$R/dev/pts"
mount -t tmpfs -o mode=1777,size=16m shm "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
# the "image"'s binaries, and the sanitizer suppressions their runs read, at
# fixed paths of their own: the checkout may live where a volume of the pod
# is mounted (a clone under /tmp, an emptyDir at /tmp)
IMG_BIN=/opt/airlock/bin IMG_LIB=/opt/airlock/tests-lib
for d in "$POD_BIN:$IMG_BIN" "$POD_LIBDIR:$IMG_LIB"; do
  mkdir -p "$R${d#*:}"
  mount --bind "${d%%:*}" "$R${d#*:}"
  mount -o remount,bind,ro "$R${d#*:}"
done

mount_volumes() { # PREFIX: "" (container) or "init"
  local kind src dst mode
  while read -r kind src dst mode; do
    case $kind in
      "$1mount")
        mkdir -p "$R$dst"
        mount --bind "$src" "$R$dst"
        if [[ $mode == ro ]]; then mount -o remount,bind,ro "$R$dst"; fi
        ;;
      "$1tmpfs")
        # src is the mount path, dst the size (emptyDir medium Memory)
        mkdir -p "$R$src"
        mountpoint -q "$R$src" ||
          mount -t tmpfs -o "mode=2777,size=$dst,gid=$(plan groups | awk '{print $NF}')" pod-mem "$R$src"
        ;;
    esac
  done <"$POD_PLAN"
}

USER_ID=$(plan user) GROUP_ID=$(plan group)
GROUPS_LIST=$(plan groups | tr ' ' ',')
CAPS=$(plan caps)
# setpriv arguments: the container's ids, capabilities and no_new_privs
PRIV=(--reuid "$USER_ID" --regid "$GROUP_ID" --groups "$GROUPS_LIST" --inh-caps -all)
case $CAPS in
  all) ;;
  none) PRIV+=(--bounding-set -all) ;;
  *) PRIV+=(--bounding-set "-all,$(sed 's/\([a-z_]\+\)/+\1/g' <<<"$CAPS")") ;;
esac
if [[ $(plan nnp) == 1 ]]; then PRIV+=(--no-new-privs); fi
ENVS=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/)
for v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS; do
  if [[ -n ${!v:-} ]]; then ENVS+=("$v=${!v//"$POD_LIBDIR"/$IMG_LIB}"); fi
done
while read -r e; do ENVS+=("$e"); done < <(plan env)

mount_volumes init
mount_volumes ""
# The init container (credstore: copies the master keys), before the root
# becomes read-only and with only its own mounts' effects kept.
mapfile -t INIT < <(plan initarg)
if ((${#INIT[@]})); then
  (cd "$R" && chroot "$R" env -i "${ENVS[@]}" setpriv "${PRIV[@]}" -- "${INIT[@]}") ||
    { echo "pod.sh: init container failed: ${INIT[*]}" >&2; exit 1; }
fi
# the init container's own volumes are not the container's
while read -r kind src dst _; do
  case $kind in
    initmount) grep -q "^mount [^ ]* $dst " "$POD_PLAN" || umount "$R$dst" ;;
    inittmpfs) grep -q "^tmpfs $src " "$POD_PLAN" || umount "$R$src" ;;
  esac
done <"$POD_PLAN"

mapfile -t ARGS < <(plan arg)
if [[ $(plan rootro) == 1 ]]; then mount -o remount,bind,ro "$R"; fi
cd "$R"
pivot_root . .oldroot
umount -l /.oldroot
cd /
exec env -i "${ENVS[@]}" setpriv "${PRIV[@]}" -- "$IMG_BIN/$POD_BINARY" "${ARGS[@]}" "$@"
