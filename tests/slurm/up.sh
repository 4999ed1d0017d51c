#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py (or by hand):
#
#     eval "$(tests/slurm/up.sh STATE_DIR)"   # prints `export SLURM_CONF=... PATH=STATE_DIR/bin:$PATH` when it is up
#     sbatch --wrap hostname
#     tests/slurm/down.sh STATE_DIR        # stops exactly the daemons this started (their pid files)
#
# Installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing and we are root with apt-get.
# Everything it writes lives in STATE_DIR (config, munge key and socket, spool, logs, pid files); /etc is untouched,
# and its daemons listen on free ports, so it runs beside a site's own SLURM or a second copy of itself. The node is
# sized by `slurmd -C` (CPUs and memory as slurmd measures them); no accounting (sacct fails: squeue gives the job
# states), no cgroups (proctrack/linuxproc, task/none), MinJobAge 300 s (SLURM's default). Exit status 2 for bad
# usage, 1 with one line on stderr when the cluster cannot be had (the test skips with that line).
set -euo pipefail

die() { echo "error: $*" >&2; exit 1; }
[ "$#" = 1 ] && [ -n "$1" ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
state="$(realpath -m -- "$1")"
here="$(cd "$(dirname "$0")" && pwd)"

need=()
for tool in munged slurmctld slurmd sbatch srun squeue scontrol; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    pkgs=(slurmctld slurmd slurm-client munge)
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; } \
      || die "could not apt-get install ${pkgs[*]} (missing: ${need[*]})"
  else
    die "SLURM is not installed (missing: ${need[*]}) and installing it needs root and apt-get"
  fi
fi
[ "$(id -u)" = 0 ] || die "the test cluster runs its daemons as root (SlurmUser=root); run as root"

mkdir -p -- "$state"/{munge,ctld,spool}
chmod 700 "$state/munge"
[ -e "$state/slurmctld.pid" ] && die "$state already holds a cluster (run tests/slurm/down.sh $state first)"
cd -- "$state"

# munge: our own key and socket (AuthInfo below points SLURM at it), never the system's daemon
key="$state/munge/munge.key"
[ -s "$key" ] || { head -c 1024 /dev/urandom > "$key"; chmod 600 "$key"; }
munged --force --socket="$state/munge/munge.socket" --key-file="$key" --pid-file="$state/munge/munged.pid" \
  --log-file="$state/munge/munged.log" --seed-file="$state/munge/munged.seed" 2>"$state/munge/start.err" \
  || die "munged did not start: $(tail -n 1 "$state/munge/start.err" "$state/munge/munged.log" 2>/dev/null | tr '\n' ' ')"

node="$(hostname -s)"
read -r ctld_port slurmd_port < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
sizes="$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+ //')"  # CPUs=.. Boards=.. ... RealMemory=..
sed -e "s|@STATE@|$state|g" -e "s|@NODE@|$node|g" -e "s|@CTLD_PORT@|$ctld_port|g" \
  -e "s|@SLURMD_PORT@|$slurmd_port|g" -e "s|@SIZES@|$sizes|g" "$here/slurm.conf.in" > "$state/slurm.conf"
export SLURM_CONF="$state/slurm.conf"
# Client commands that find this config from PATH alone: the executor plugin's job step drops every SLURM_* variable
# (SLURM_CONF too) before its nested srun, which would then look for /etc/slurm/slurm.conf.
mkdir -p "$state/bin"
for tool in sbatch srun squeue scontrol scancel sinfo sacct; do
  printf '#!/bin/sh\nSLURM_CONF=%q exec %q "$@"\n' "$SLURM_CONF" "$(command -v "$tool")" > "$state/bin/$tool"
  chmod +x "$state/bin/$tool"
done

slurmctld -c -f "$SLURM_CONF" || die "slurmctld did not start: $(tail -n 1 "$state/slurmctld.log" 2>/dev/null)"
slurmd -f "$SLURM_CONF" -N "$node" || die "slurmd did not start: $(tail -n 1 "$state/slurmd.log" 2>/dev/null)"

# the node registers within a second or two; then prove a job runs
for _ in $(seq 1 60); do
  sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break
  sleep 0.5
done
sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)' \
  || die "node $node did not come up: $(sinfo -h -N -o '%T %E' 2>&1 | head -n 1); $(tail -n 1 "$state/slurmd.log")"
timeout 60 srun -N1 -n1 -t 1 true 2>"$state/srun.err" || die "srun true failed: $(tail -n 1 "$state/srun.err")"
echo "export SLURM_CONF=$SLURM_CONF PATH=$state/bin:\$PATH"
