#!/usr/bin/env bash
# A real S3-compatible server (SeaweedFS `weed mini`) on 127.0.0.1 for tests.
#   scripts/s3-server.sh start DIR   start it with data under DIR; writes DIR/env (KEY=VALUE lines
#                                    for object_store's AmazonS3Builder::from_env) and prints its path
#   scripts/s3-server.sh stop DIR    SIGTERM it, wait, SIGKILL after ~15 s
# Files in DIR: weed.pid, weed.log, s3.json (identity), env, data/.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
BUCKET=trace2eval-test
REGION=us-east-1

die() { echo "s3-server: $*" >&2; exit 1; }
log() { echo "s3-server: $*" >&2; }
alive() { [[ -f "$1/weed.pid" ]] && kill -0 "$(cat "$1/weed.pid")" 2>/dev/null; }

# Print 10 distinct free TCP ports on 127.0.0.1 (held open together so they differ). The last is
# the admin port A, chosen so that A+10000 is free too: weed mini's built-in worker dials the admin
# gRPC port at A+10000 whatever -admin.port.grpc says (seen in 4.48), so that is the one we give.
free_ports() {
    "$VENV/bin/python" - <<'PY'
import socket
socks = []
def bind(port=0):
    s = socket.socket(); s.bind(("127.0.0.1", port)); socks.append(s); return s.getsockname()[1]
ports = [bind() for _ in range(8)]
while True:
    a = bind()
    try:
        if a + 10000 < 65536: ports += [a, bind(a + 10000)]; break
    except OSError:
        pass
print(" ".join(map(str, ports)))
PY
}

start() {
    local dir="$1"
    mkdir -p "$dir/data"
    dir="$(cd "$dir" && pwd)"
    alive "$dir" && die "already running in $dir (pid $(cat "$dir/weed.pid"))"
    [[ -x "$VENV/bin/weed" ]] || "$REPO/scripts/pyenv.sh" >/dev/null
    [[ -x "$VENV/bin/weed" ]] || die "no $VENV/bin/weed after scripts/pyenv.sh (delete $VENV and retry)"

    local key secret s3 attempt
    key="T2E$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)"
    secret="$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    cat >"$dir/s3.json" <<JSON
{"identities": [{"name": "trace2eval-test",
  "credentials": [{"accessKey": "$key", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON

    # The ports were free when chosen, but anything on the machine (another test's server, an
    # outgoing connection's ephemeral port) may take one before weed binds it. weed then exits at
    # once saying so, and we start again on fresh ports.
    for attempt in 1 2 3 4 5; do
        s3="$(launch "$dir")"
        wait_for_s3 "$dir" "$s3" "$key" "$secret" && break
        grep -qiE 'is not available|address already in use' "$dir/weed.log" && ((attempt < 5)) ||
            { tail -n 30 "$dir/weed.log" >&2; die "weed exited during startup (log: $dir/weed.log)"; }
        log "a port was taken before weed bound it; retrying on fresh ports"
        rm -f "$dir/weed.pid"
    done

    cat >"$dir/env" <<ENV
AWS_ENDPOINT_URL=http://127.0.0.1:$s3
AWS_ALLOW_HTTP=true
AWS_ACCESS_KEY_ID=$key
AWS_SECRET_ACCESS_KEY=$secret
AWS_REGION=$REGION
AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false
AWS_COPY_IF_NOT_EXISTS=multipart
S3_BUCKET=$BUCKET
ENV
    log "ready: http://127.0.0.1:$s3 bucket $BUCKET, pid $(cat "$dir/weed.pid"), env in $dir/env"
    echo "$dir/env"
}

# Start weed mini on fresh ports in the background; print its S3 port.
launch() {
    local dir="$1" s3 s3g master masterg volume volumeg filer filerg admin adming
    read -r s3 s3g master masterg volume volumeg filer filerg admin adming <<<"$(free_ports)"
    echo "$s3 $s3g $master $masterg $volume $volumeg $filer $filerg $admin $adming" >"$dir/ports"
    # Every listener gets an explicit loopback port; WebDAV, Iceberg and Lance are not needed, so
    # they are off. Telemetry is off and its URL points nowhere, so nothing leaves the machine.
    # autoCreateBucket=false: a missing bucket is an error, as on AWS.
    log "starting weed mini in $dir (s3 port $s3)"
    nohup "$VENV/bin/weed" mini \
        -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -metricsIp=127.0.0.1 \
        -master.telemetry=false -master.telemetry.url=http://127.0.0.1:1/ \
        -s3.port="$s3" -s3.port.grpc="$s3g" -s3.port.iceberg=0 -s3.port.lance=0 \
        -master.port="$master" -master.port.grpc="$masterg" \
        -volume.port="$volume" -volume.port.grpc="$volumeg" \
        -filer.port="$filer" -filer.port.grpc="$filerg" \
        -admin.port="$admin" -admin.port.grpc="$adming" \
        -webdav=false -s3.autoCreateBucket=false -s3.config="$dir/s3.json" \
        </dev/null >"$dir/weed.log" 2>&1 &
    echo $! >"$dir/weed.pid"
    echo "$s3"
}

# Wait for S3 to answer, then create the bucket (retried: the filer may still be joining).
# 409 = the bucket survived from an earlier run in the same DIR. Fails if weed exits meanwhile;
# dies if it does not answer within 60 s.
wait_for_s3() {
    local dir="$1" key="$3" secret="$4"
    local url="http://127.0.0.1:$2" deadline=$((SECONDS + 60)) code=000
    while :; do
        alive "$dir" || return 1
        code="$(curl -s -o "$dir/.bucket.out" -w '%{http_code}' --max-time 5 \
            --aws-sigv4 "aws:amz:$REGION:s3" --user "$key:$secret" -X PUT "$url/$BUCKET" || true)"
        [[ "$code" == 200 || "$code" == 409 ]] && break
        if ((SECONDS >= deadline)); then
            tail -n 30 "$dir/weed.log" >&2
            cat "$dir/.bucket.out" >&2 2>/dev/null || true
            stop "$dir"
            die "S3 on $url not ready after 60 s (last HTTP status $code; log: $dir/weed.log)"
        fi
        sleep 0.5
    done
    rm -f "$dir/.bucket.out"
}

stop() {
    local dir="$1" pid i
    if ! alive "$dir"; then log "not running in $dir"; rm -f "$dir/weed.pid"; return 0; fi
    pid="$(cat "$dir/weed.pid")"
    kill -TERM "$pid"
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "pid $pid ignored SIGTERM for 15 s, killing"; kill -KILL "$pid"; fi
    rm -f "$dir/weed.pid"
    # weed leaves some of its unix sockets behind in /tmp (/tmp/seaweedfs-<part>-<port>.sock).
    local port
    for port in $(cat "$dir/ports" 2>/dev/null); do rm -f /tmp/seaweedfs-*-"$port".sock; done
    log "stopped pid $pid"
}

case "${1:-}" in
    start | stop) [[ $# -eq 2 ]] || die "usage: $0 start|stop DIR"; "$1" "$2" ;;
    *) die "usage: $0 start|stop DIR" ;;
esac
