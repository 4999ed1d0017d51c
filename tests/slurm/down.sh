#!/usr/bin/env bash
# Stops the test cluster that tests/slurm/up.sh STATE_DIR started: cancels its jobs, then ends slurmd, slurmctld and
# munged by the pids in their pid files (nothing else). Safe to run twice. Usage: tests/slurm/down.sh STATE_DIR
set -uo pipefail
[ "$#" = 1 ] && [ -n "$1" ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
state="$(realpath -m -- "$1")"
[ -d "$state" ] || { echo "error: $state: no such folder" >&2; exit 2; }

if [ -e "$state/slurmctld.pid" ] && [ -e "$state/slurm.conf" ]; then
  export SLURM_CONF="$state/slurm.conf"
  timeout 10 scancel --cluster=scoretest --full --user=root >/dev/null 2>&1 || true
  for _ in $(seq 1 20); do  # let the job steps end before their slurmd goes
    [ -z "$(timeout 5 squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
    sleep 0.5
  done
fi

stop() {  # stop PIDFILE: TERM, up to 10 s, then KILL; only a process whose pid the file names
  local file="$1" pid
  [ -s "$file" ] || return 0
  pid="$(tr -dc 0-9 < "$file")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f -- "$file"
}
stop "$state/slurmd.pid"
stop "$state/slurmctld.pid"
stop "$state/munge/munged.pid"
