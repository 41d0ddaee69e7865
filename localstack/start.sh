#!/usr/bin/env bash
# Start the test servers on this host, without Docker:
#   LocalStack (S3 + Secrets Manager) on 127.0.0.1:4566, the GCS emulator on 127.0.0.1:9023 and
#   Azurite (Azure Blob Storage, from npm; needs node and npm) on 127.0.0.1:10000, in memory.
# Usage: localstack/start.sh [s3|gcs|azure|all]   (default: all)
# Idempotent: a server that already answers is left alone. Exits non-zero if one is not ready in
# time. State (venv, logs, pid files) lives in ${BLOCKS_SERVICES_DIR:-<repo>/.localstack}.
set -euo pipefail

what="${1:-all}"
case "$what" in
    s3 | localstack) want_s3=1 want_gcs=0 want_azure=0 ;;
    gcs) want_s3=0 want_gcs=1 want_azure=0 ;;
    azure | azurite) want_s3=0 want_gcs=0 want_azure=1 ;;
    all) want_s3=1 want_gcs=1 want_azure=1 ;;
    *) echo "usage: $0 [s3|gcs|azure|all]" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${BLOCKS_SERVICES_DIR:-$repo/.localstack}"
venv="$dir/venv"
timeout="${BLOCKS_SERVICES_TIMEOUT:-180}"
mkdir -p "$dir"

# Pins known to work together on Python 3.13: newer cbor2/pyopenssl/cryptography break
# localstack-core 2026.3.0's runtime at import time.
reqs=(
    "localstack-core[runtime]==2026.3.0" "cbor2<5.7" "pyopenssl<24.3" "cryptography<44"
    service_identity gcp-storage-emulator
)

# Azurite, the Azure Storage emulator Microsoft maintains, pinned: installed with npm into its own
# folder (node_modules there), once.
azurite_version="3.37.0"
azurite_dir="$dir/azurite"

die() { echo "localstack/start.sh: $*" >&2; exit 1; }

# Several pytest workers (or people) may run this at once: one installer/starter at a time.
exec 9>"$dir/start.lock"
flock -w 900 9 || { echo "$0: $dir/start.lock is held by another start/stop" >&2; exit 1; }

find_python313() {
    local py=""
    if command -v pyenv >/dev/null 2>&1; then
        # The exact version if present, else any installed 3.13.x.
        py="$(PYENV_VERSION=3.13.0 pyenv which python 2>/dev/null)" || py=""
        if [ -z "$py" ]; then
            local v
            v="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.13(\.[0-9]+)?$' | tail -n1)" || v=""
            [ -n "$v" ] && py="$(PYENV_VERSION="$v" pyenv which python 2>/dev/null)" || true
        fi
    fi
    # pyenv installed but not on PATH (a non-login shell): look in its versions dir directly.
    if [ -z "$py" ]; then
        local cand
        for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13; do
            [ -x "$cand" ] && py="$cand"
        done
    fi
    [ -z "$py" ] && py="$(command -v python3.13 || true)"
    [ -n "$py" ] || return 1
    "$py" -c 'import sys, venv; assert sys.version_info[:2] == (3, 13)' 2>/dev/null || return 1
    echo "$py"
}

ensure_venv() {
    # Cached: reinstall only if the pins changed or a previous install did not finish.
    local stamp="$venv/.blocks-reqs"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${reqs[*]}" ]; then
        return 0
    fi
    local py
    py="$(find_python313)" || die "no Python 3.13 found (tried 'PYENV_VERSION=3.13.0 pyenv which python', ${PYENV_ROOT:-$HOME/.pyenv}/versions/3.13*,
other pyenv 3.13.x, and python3.13 on PATH). Install one, e.g. 'pyenv install 3.13'."
    echo "creating $venv with $py (once; takes a minute or two)" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv"
    # pip's output goes to a log (the machine's pip config is noisy); shown only on failure.
    "$venv/bin/python" -m pip install --disable-pip-version-check "${reqs[@]}" \
        >"$dir/install.log" 2>&1 || die "pip install failed; last lines of $dir/install.log:
$(tail -n 30 "$dir/install.log")"
    echo "${reqs[*]}" >"$stamp"
}

ensure_azurite() {
    local stamp="$azurite_dir/.blocks-version"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$azurite_version" ] \
        && [ -x "$azurite_dir/node_modules/.bin/azurite-blob" ]; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || die "npm not found: Azurite needs node and npm (e.g. apt-get install nodejs npm)"
    echo "installing azurite@$azurite_version into $azurite_dir (once; takes a minute or two)" >&2
    mkdir -p "$azurite_dir"
    npm install --prefix "$azurite_dir" --no-audit --no-fund --no-save "azurite@$azurite_version" \
        >"$dir/azurite-install.log" 2>&1 || die "npm install azurite failed; last lines of $dir/azurite-install.log:
$(tail -n 30 "$dir/azurite-install.log")"
    echo "$azurite_version" >"$stamp"
}

# Succeeds when the server named $1 answers as ready (checked with the venv's Python: no curl needed).
ready() {
    "$venv/bin/python" - "$1" <<'EOF'
import json, sys, urllib.error, urllib.request
try:
    if sys.argv[1] == "azurite":
        # Any HTTP answer from the blob service (an anonymous request is refused with 4xx).
        try:
            urllib.request.urlopen("http://127.0.0.1:10000/devstoreaccount1?comp=list", timeout=2)
            ok = True
        except urllib.error.HTTPError as exc:
            ok = exc.headers.get("x-ms-request-id") is not None or exc.code < 500
    elif sys.argv[1] == "localstack":
        with urllib.request.urlopen("http://127.0.0.1:4566/_localstack/health", timeout=2) as r:
            services = json.load(r).get("services", {})
        ok = all(services.get(s) in ("available", "running") for s in ("s3", "secretsmanager"))
    else:
        with urllib.request.urlopen("http://127.0.0.1:9023/storage/v1/b?project=test", timeout=2) as r:
            ok = r.status == 200
except Exception:
    ok = False
sys.exit(0 if ok else 1)
EOF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start NAME CMD...: run CMD in its own session (so stop.sh can kill the whole process group),
# then wait until NAME is ready.
start() {
    local name="$1"; shift
    local pidfile="$dir/$name.pid" log="$dir/$name.log"
    if ready "$name"; then
        echo "$name: already running" >&2
        return 0
    fi
    if ! alive "$pidfile"; then
        echo "--- start $(date -Is)" >>"$log"
        # 9>&-: the server must not inherit (and so hold forever) the start lock.
        setsid "$@" >>"$log" 2>&1 </dev/null 9>&- &
        echo $! >"$pidfile"
    fi
    local deadline=$((SECONDS + timeout))
    until ready "$name"; do
        alive "$pidfile" || { rm -f "$pidfile"; die "$name exited during start-up; last lines of $log:
$(tail -n 30 "$log")"; }
        if [ "$SECONDS" -ge "$deadline" ]; then
            # Leave nothing half-started behind: a later start begins afresh.
            kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
            rm -f "$pidfile"
            die "$name not ready after ${timeout}s (BLOCKS_SERVICES_TIMEOUT); see $log
$(tail -n 30 "$log")"
        fi
        sleep 0.5
    done
    echo "$name: ready (pid $(cat "$pidfile"), log $log)" >&2
}

ensure_venv  # its Python also checks every server's readiness

if [ "$want_s3" = 1 ]; then
    # Keep LocalStack's state in our dir and stop it phoning home (there is no network here).
    start localstack env SERVICES=s3,secretsmanager GATEWAY_LISTEN=127.0.0.1:4566 \
        LOCALSTACK_VOLUME_DIR="$dir/volume" FILESYSTEM_ROOT="$dir/fs" \
        DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 DNS_ADDRESS=0 \
        "$venv/bin/python" -m localstack.runtime.main
fi
if [ "$want_gcs" = 1 ]; then
    start gcs "$venv/bin/gcp-storage-emulator" start --host=127.0.0.1 --port=9023 --in-memory
fi
if [ "$want_azure" = 1 ]; then
    ensure_azurite
    # --loose / --skipApiVersionCheck: accept the headers and API versions newer SDKs send.
    start azurite "$azurite_dir/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 \
        --blobPort 10000 --inMemoryPersistence --skipApiVersionCheck --loose
fi
