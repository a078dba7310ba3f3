#!/bin/bash
# A root filesystem holding one Slurm release, for running the local cluster on a release other than
# the host's (Debian 12: 22.05).  Built once with debootstrap from Debian's own registry and reused:
#   SLURM=24.11 -> Debian 13 (trixie), SLURM=26.05 -> Debian sid.
# Prints the root filesystem's path.  The installed major version is checked against the request:
# sid moves on, and a root that no longer holds the asked-for release is an error, not a surprise.
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
. "$here/lib.sh"
release=${1:?usage: rootfs.sh 24.11|26.05}
case "$release" in
  24.11) suite=trixie;;
  26.05) suite=sid;;
  *) die "no root filesystem for Slurm '$release' (24.11 or 26.05; 22.05 is the host's own)";;
esac
root=$(release_root "$release")
pkgs="slurmctld slurmd slurm-client munge slurmdbd mariadb-server libffi8 libsqlite3-0 libnsl2 procps iproute2"

if [ ! -e "$root/.complete" ]; then
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  }
  # the registry the host's apt already uses (a local mirror on some machines)
  mirror=$(grep -rhoE '^(URIs:|deb) *https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
           grep -oE 'https?://[^ ]+' | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  rm -rf "$root"; mkdir -p "$(dirname "$root")"
  log "building a $suite root filesystem for Slurm $release in $root (about a minute, once)"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
    { tail -20 "$root.debootstrap.log" >&2; die "debootstrap $suite failed (log: $root.debootstrap.log)"; }
  # package scripts must not start daemons; sid's Release file is a snapshot apt would call expired
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
  echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99slurm-gpu-snapshot"
  chroot "$root" sh -c "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends $pkgs && apt-get clean" \
    >"$root.apt.log" 2>&1 || { tail -20 "$root.apt.log" >&2; die "installing Slurm in the $suite root failed (log: $root.apt.log)"; }
  touch "$root/.complete"
fi
have=$(chroot "$root" dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || true)
[[ "$have" == "$release".* ]] || die "the root filesystem $root holds Slurm '$have', not $release: remove it (rm -rf $root) to build it again"
echo "$root"
