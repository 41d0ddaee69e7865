#!/usr/bin/env bash
# Stop the servers that localstack/start.sh started: localstack/stop.sh [s3|gcs|azure|all] (default all).
# Idempotent. Each server was started in its own session, so killing its process group leaves no
# child behind. Servers this script did not start (no pid file, e.g. Docker) are left alone.
set -euo pipefail

what="${1:-all}"
case "$what" in
    s3 | localstack) names=(localstack) ;;
    gcs) names=(gcs) ;;
    azure | azurite) names=(azurite) ;;
    all) names=(localstack gcs azurite) ;;
    *) echo "usage: $0 [s3|gcs|azure|all]" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${BLOCKS_SERVICES_DIR:-$repo/.localstack}"

# Same lock as start.sh, so a stop never races a start half-way.
mkdir -p "$dir"
exec 9>"$dir/start.lock"
flock -w 900 9 || { echo "$0: $dir/start.lock is held by another start/stop" >&2; exit 1; }

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

status=0
for name in "${names[@]}"; do
    pidfile="$dir/$name.pid"
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    # Guard against a recycled pid: only touch a group whose leader is still our server.
    if [ -n "$pid" ] && group_alive "$pid" \
        && { ! [ -r "/proc/$pid/cmdline" ] \
            || tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE 'localstack|gcp-storage-emulator|azurite'; }; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        # LocalStack shuts down gracefully in a few seconds; give it 20 before SIGKILL.
        for _ in $(seq 40); do group_alive "$pid" || break; sleep 0.5; done
        if group_alive "$pid"; then
            echo "$name: still running after SIGTERM; sending SIGKILL" >&2
            kill -KILL -- "-$pid" 2>/dev/null || true
            sleep 0.5
        fi
        if group_alive "$pid"; then
            echo "$name: could not stop process group $pid" >&2
            status=1
            continue
        fi
        echo "$name: stopped" >&2
    fi
    rm -f "$pidfile"
done
exit "$status"
