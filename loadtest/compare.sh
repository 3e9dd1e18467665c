#!/usr/bin/env bash
# Berry vs nginx on loopback: throughput, latency and proxy CPU per request for small
# non-streaming chat completions. See loadtest/README.md.
#
#   loadtest/compare.sh [--driver auto|uring|epoll] [--no-build]
#   env: DURATION=10 CONNECTIONS=64 THREADS=2 ROUNDS=1 WARMUP=2 KEEP_TMP=0
#        NGINX_TEMPLATE=loadtest/nginx.conf.template
#        BERRY_EXTRA_TOML='[observability]\naccess_log = "stdout"' (appended to Berry's config)
set -euo pipefail

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-1}
WARMUP=${WARMUP:-2}
KEEP_TMP=${KEEP_TMP:-0}
MAX_ERROR_PCT=0.1
TOKEN="berry-loadtest-token-0123456789"

DRIVER=""
BUILD=1
usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --driver)
            [[ $# -ge 2 ]] || { usage >&2; exit 2; }
            DRIVER=$2
            shift 2
            ;;
        --driver=*) DRIVER=${1#--driver=}; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$DRIVER" in
    "" | auto | uring | epoll) ;;
    *) echo "compare.sh: --driver must be auto, uring or epoll" >&2; exit 2 ;;
esac
for v in DURATION CONNECTIONS THREADS ROUNDS WARMUP; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || { echo "compare.sh: $v must be a positive integer" >&2; exit 2; }
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

log() { printf '[compare] %s\n' "$*" >&2; }
die() { printf '[compare] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing: ${missing[*]}"
    SUDO=()
    [[ $EUID -eq 0 ]] || SUDO=(sudo)
    "${SUDO[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y "${missing[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
CLK_TCK=$(getconf CLK_TCK)

if [[ $BUILD -eq 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release) >&2
fi
[[ -x "$ROOT/target/release/berry" ]] || die "$ROOT/target/release/berry not found (build it, or drop --no-build)"

# ---------------------------------------------------------------------------------------
# Temp dir, process bookkeeping, cleanup
# ---------------------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/berry-compare.XXXXXX)
chmod 755 "$TMP" # nginx workers may run as an unprivileged user
PIDS=()
WRK_PID=""
FAILED=1

cleanup() {
    local rc=$?
    set +e
    [[ -n $WRK_PID ]] && kill "$WRK_PID" 2>/dev/null
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [[ $FAILED -eq 1 || $KEEP_TMP -eq 1 ]]; then
        log "logs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Copy the binary so a concurrent rebuild cannot change what is measured.
cp "$ROOT/target/release/berry" "$TMP/berry"
BERRY="$TMP/berry"

# Three distinct free loopback ports (held open together while picking).
read -r MOCK_PORT BERRY_PORT NGINX_PORT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

wait_port() { # name pid port
    local name=$1 pid=$2 port=$3
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) exited during startup; see $TMP/$name.log"
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$name did not listen on 127.0.0.1:$port within 10 s"
}

# A single request through a target must answer 200 with a chat completion.
probe() { # name port
    local code
    code=$(curl -sS -o "$TMP/probe-$1.json" -w '%{http_code}' --max-time 5 \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" \
        --data-binary "@$TMP/body.json" "http://127.0.0.1:$2/v1/chat/completions") || true
    if [[ $code != 200 ]] || ! grep -q '"chat.completion"' "$TMP/probe-$1.json"; then
        die "probe of $1 answered HTTP $code: $(head -c 300 "$TMP/probe-$1.json" 2>/dev/null)"
    fi
}

# ---------------------------------------------------------------------------------------
# Request body and wrk script
# ---------------------------------------------------------------------------------------
BODY='{"model":"bench-model","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Reply with one short sentence that says hello."}],"temperature":0.2,"max_tokens":32,"stream":false}'
printf '%s' "$BODY" >"$TMP/body.json"
cat >"$TMP/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BERRYBENCH requests=%d duration_us=%d status_errors=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
EOF

# ---------------------------------------------------------------------------------------
# Start mock, Berry, nginx
# ---------------------------------------------------------------------------------------
"$BERRY" mock --bind "127.0.0.1:$MOCK_PORT" --workers 1 --latency-ms 0 >"$TMP/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
wait_port mock "$MOCK_PID" "$MOCK_PORT"

cat >"$TMP/berry.toml" <<EOF
[server]
bind_address = "127.0.0.1:$BERRY_PORT"

[providers.mock]
name = "Mock"
base_url = "http://127.0.0.1:$MOCK_PORT"
api_key = "sk-loadtest-mock-000000000000"
models = ["mock-model"]

[models.bench]
name = "bench-model"
[[models.bench.backends]]
provider = "mock"
model = "mock-model"

[users.bench]
name = "Load test"
token = "$TOKEN"
EOF
# Like the nginx config (no access log), Berry runs without its access log; its metrics stay
# on, as by default. BERRY_EXTRA_TOML replaces this table, e.g. to turn the access log on.
printf '%b\n' "${BERRY_EXTRA_TOML:-[observability]\naccess_log = \"off\"}" >>"$TMP/berry.toml"
BERRY_ARGS=(serve --config "$TMP/berry.toml" --workers 2)
[[ -n $DRIVER ]] && BERRY_ARGS+=(--driver "$DRIVER")
"$BERRY" "${BERRY_ARGS[@]}" >"$TMP/berry.log" 2>&1 &
BERRY_PID=$!
PIDS+=("$BERRY_PID")
wait_port berry "$BERRY_PID" "$BERRY_PORT"

mkdir -p "$TMP/nginx"
sed -e "s|@PREFIX@|$TMP/nginx|g" -e "s|@UPSTREAM_PORT@|$MOCK_PORT|g" -e "s|@LISTEN_PORT@|$NGINX_PORT|g" \
    "${NGINX_TEMPLATE:-$HERE/nginx.conf.template}" >"$TMP/nginx/nginx.conf"
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port nginx "$NGINX_PID" "$NGINX_PORT"
NGINX_PIDS=("$NGINX_PID")
for _ in $(seq 50); do
    mapfile -t workers < <(pgrep -P "$NGINX_PID" || true)
    [[ ${#workers[@]} -ge 2 ]] && break
    sleep 0.1
done
[[ ${#workers[@]} -ge 2 ]] || die "nginx workers did not start; see $TMP/nginx/error.log"
NGINX_PIDS+=("${workers[@]}")

probe mock "$MOCK_PORT"
probe berry "$BERRY_PORT"
probe nginx "$NGINX_PORT"

DRIVER_LINE=$(grep -o 'I/O driver: .*' "$TMP/berry.log" | head -1 || true)
log "mock 127.0.0.1:$MOCK_PORT (pid $MOCK_PID), berry 127.0.0.1:$BERRY_PORT (pid $BERRY_PID, ${DRIVER_LINE:-driver unknown}), nginx 127.0.0.1:$NGINX_PORT (pids ${NGINX_PIDS[*]})"
log "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s (warm-up ${WARMUP}s), $ROUNDS round(s), body ${#BODY} bytes"

# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------
cpu_ticks() { # pids... -> summed utime+stime in clock ticks
    local total=0 p stat rest
    local -a f
    for p in "$@"; do
        stat=$(<"/proc/$p/stat") || die "process $p vanished"
        rest=${stat##*) }          # fields after "(comm) "; rest starts at field 3
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12])) # fields 14 (utime) and 15 (stime)
    done
    echo "$total"
}

steal_ticks() { # machine-wide steal time (field 9 of the cpu line), a hint of noisy neighbours
    local -a c
    read -r -a c </proc/stat
    echo "${c[8]:-0}"
}

tcp_retrans() { # machine-wide TCP retransmitted segments (loopback p99 spikes are mostly these)
    awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RetransSegs") c = i; h = 1 } else print $c }' /proc/net/snmp
}

check_alive() {
    local p
    for p in "${PIDS[@]}" "${NGINX_PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || die "process $p died; logs: $TMP/{mock,berry,nginx}.log, $TMP/nginx/error.log"
    done
}

run_wrk() { # name port duration outfile
    timeout $(($3 + 60)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3s" --latency -s "$TMP/post.lua" \
        "http://127.0.0.1:$2/v1/chat/completions" >"$4" 2>&1 &
    WRK_PID=$!
    local rc=0
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    [[ $rc -eq 0 ]] || { cat "$4" >&2; die "wrk against $1 failed (exit $rc)"; }
}

RESULTS="$TMP/results.tsv" # round target rps p50_us p99_us cpu_us_per_req requests errors
: >"$RESULTS"

measure() { # round name port
    local round=$1 name=$2 port=$3 out="$TMP/wrk-r$1-$2.txt"
    local -a pids=()
    case "$name" in
        berry) pids=("$BERRY_PID") ;;
        nginx) pids=("${NGINX_PIDS[@]}") ;;
    esac
    run_wrk "$name" "$port" "$WARMUP" "$TMP/wrk-r$round-$name-warmup.txt"
    check_alive
    local c0=0 c1=0 m0 m1 s0 s1 x0 x1
    [[ ${#pids[@]} -gt 0 ]] && c0=$(cpu_ticks "${pids[@]}")
    m0=$(cpu_ticks "$MOCK_PID")
    s0=$(steal_ticks)
    x0=$(tcp_retrans)
    run_wrk "$name" "$port" "$DURATION" "$out"
    [[ ${#pids[@]} -gt 0 ]] && c1=$(cpu_ticks "${pids[@]}")
    m1=$(cpu_ticks "$MOCK_PID")
    s1=$(steal_ticks)
    x1=$(tcp_retrans)
    check_alive
    local line
    line=$(grep '^BERRYBENCH ' "$out") || { cat "$out" >&2; die "no summary from wrk against $name"; }
    local requests duration_us status_errors e_connect e_read e_write e_timeout p50 p99
    requests=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$line")
    duration_us=$(sed -n 's/.* duration_us=\([0-9]*\).*/\1/p' <<<"$line")
    status_errors=$(sed -n 's/.* status_errors=\([0-9]*\).*/\1/p' <<<"$line")
    e_connect=$(sed -n 's/.* connect=\([0-9]*\).*/\1/p' <<<"$line")
    e_read=$(sed -n 's/.* read=\([0-9]*\).*/\1/p' <<<"$line")
    e_write=$(sed -n 's/.* write=\([0-9]*\).*/\1/p' <<<"$line")
    e_timeout=$(sed -n 's/.* timeout=\([0-9]*\).*/\1/p' <<<"$line")
    p50=$(sed -n 's/.* p50_us=\([0-9]*\).*/\1/p' <<<"$line")
    p99=$(sed -n 's/.* p99_us=\([0-9]*\).*/\1/p' <<<"$line")
    [[ $requests -gt 0 ]] || { cat "$out" >&2; die "wrk completed no requests against $name"; }
    local socket_errors=$((e_connect + e_read + e_write + e_timeout))
    local bad
    bad=$(awk -v s="$status_errors" -v e="$socket_errors" -v n="$requests" -v m="$MAX_ERROR_PCT" \
        'BEGIN { print ((s + e) * 100 > m * n) ? 1 : 0 }')
    if [[ $bad -eq 1 ]]; then
        cat "$out" >&2
        die "$name: $status_errors non-2xx/3xx and $socket_errors socket errors (connect $e_connect, read $e_read, write $e_write, timeout $e_timeout) in $requests requests (> $MAX_ERROR_PCT %)"
    fi
    local rps cpu mock_cpu steal
    mock_cpu=$(awk -v t="$((m1 - m0))" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    steal=$(awk -v t="$((s1 - s0))" -v hz="$CLK_TCK" -v d="$duration_us" -v c="$(nproc)" 'BEGIN { printf "%.1f", t / hz * 100 / (d / 1e6 * c) }')
    rps=$(awk -v n="$requests" -v d="$duration_us" 'BEGIN { printf "%.0f", n / (d / 1e6) }')
    if [[ ${#pids[@]} -gt 0 ]]; then
        cpu=$(awk -v t="$((c1 - c0))" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    else
        cpu="-"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$rps" "$p50" "$p99" "$cpu" "$requests" \
        "$((status_errors + socket_errors))" >>"$RESULTS"
    log "round $round $name: $rps req/s, p50 ${p50} µs, p99 ${p99} µs, proxy CPU ${cpu} µs/req (mock ${mock_cpu}), $requests requests, $((status_errors + socket_errors)) errors, steal ${steal} %, TCP retransmits $((x1 - x0)), max latency $(sed -n 's/.* max_us=\([0-9]*\).*/\1/p' <<<"$line") µs"
}

TARGETS=(mock berry nginx)
declare -A PORT=([mock]=$MOCK_PORT [berry]=$BERRY_PORT [nginx]=$NGINX_PORT)
for ((r = 1; r <= ROUNDS; r++)); do
    # Rotate the order each round so no target always runs first (or right after another).
    for ((i = 0; i < 3; i++)); do
        t=${TARGETS[$(((i + r - 1) % 3))]}
        measure "$r" "$t" "${PORT[$t]}"
    done
done

# Berry must not have logged anything alarming during the runs.
if grep -Eq ' (ERROR|WARN) ' "$TMP/berry.log"; then
    log "Berry logged warnings/errors during the run:"
    grep -E ' (ERROR|WARN) ' "$TMP/berry.log" | head -20 >&2
fi

# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
report() { # plain|md
    awk -F'\t' -v fmt="$1" '
    function ms(us) { return sprintf("%.2f", us / 1000) }
    function median(arr, n,    i, j, t) {
        for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
        return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    function row(a, b, c, d, e, f) {
        if (fmt == "md") printf "| %s | %s | %s | %s | %s | %s |\n", a, b, c, d, e, f
        else printf "%-6s %-7s %10s %9s %9s %16s\n", a, b, c, d, e, f
    }
    {
        R[$1] = 1; rps[$1, $2] = $3; p50[$1, $2] = $4; p99[$1, $2] = $5; cpu[$1, $2] = $6
        if ($1 > nr) nr = $1
    }
    END {
        if (fmt == "md") { print "| round | target | req/s | p50 ms | p99 ms | proxy CPU µs/req |"; print "|---|---|---:|---:|---:|---:|" }
        else row("round", "target", "req/s", "p50 ms", "p99 ms", "proxy CPU µs/req")
        split("mock berry nginx", T, " ")
        for (r = 1; r <= nr; r++) for (k = 1; k <= 3; k++) { t = T[k]; row(r, t, rps[r, t], ms(p50[r, t]), ms(p99[r, t]), cpu[r, t]) }
        print ""
        if (fmt == "md") { print "| round | Berry/nginx CPU per request | Berry/nginx req/s | Berry/nginx p99 |"; print "|---|---:|---:|---:|" }
        for (r = 1; r <= nr; r++) {
            cr[r] = cpu[r, "berry"] / cpu[r, "nginx"]; rr[r] = rps[r, "berry"] / rps[r, "nginx"]; pr[r] = p99[r, "berry"] / p99[r, "nginx"]
            if (fmt == "md") printf "| %d | %.2f× | %.2f× | %.2f× |\n", r, cr[r], rr[r], pr[r]
            else printf "round %d: Berry/nginx CPU per request %.2fx, req/s %.2fx, p99 %.2fx\n", r, cr[r], rr[r], pr[r]
        }
        if (nr > 1) {
            if (fmt == "md") { print ""; print "| median over " nr " rounds | req/s | p50 ms | p99 ms | proxy CPU µs/req |"; print "|---|---:|---:|---:|---:|" }
            else { print ""; printf "median over %d rounds:\n", nr }
            for (k = 1; k <= 3; k++) {
                t = T[k]
                for (r = 1; r <= nr; r++) { a[r] = rps[r, t]; b[r] = p50[r, t]; c[r] = p99[r, t]; d[r] = cpu[r, t] }
                mr = median(a, nr); m50 = median(b, nr); m99 = median(c, nr)
                mc = (t == "mock") ? "-" : sprintf("%.1f", median(d, nr))
                if (fmt == "md") printf "| %s | %.0f | %s | %s | %s |\n", t, mr, ms(m50), ms(m99), mc
                else printf "%-6s %10.0f req/s  p50 %s ms  p99 %s ms  CPU %s µs/req\n", t, mr, ms(m50), ms(m99), mc
            }
            for (r = 1; r <= nr; r++) { a[r] = cr[r]; b[r] = rr[r]; c[r] = pr[r] }
            if (fmt == "md") printf "\nMedian per-round ratios Berry/nginx: CPU per request **%.2f×**, req/s **%.2f×**, p99 **%.2f×**.\n", median(a, nr), median(b, nr), median(c, nr)
            else printf "median ratios Berry/nginx: CPU per request %.2fx, req/s %.2fx, p99 %.2fx\n", median(a, nr), median(b, nr), median(c, nr)
        }
    }' "$RESULTS"
}

TITLE="Berry vs nginx: POST /v1/chat/completions (${#BODY}-byte body), wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s (warm-up ${WARMUP}s), Berry ${DRIVER_LINE:-driver unknown}, run order rotated each round"
echo
echo "$TITLE"
echo
report plain
echo
echo "----- Markdown -----"
echo
echo "$TITLE"
echo
report md
FAILED=0
