#!/bin/bash
# Instructions cofferd executes per HTTP KV read (GET secret/data/bench/hot with a policy token, the
# request of `bench.py`'s kv_read), all threads, under callgrind: it serves N and then 3N requests
# (4 keep-alive connections, one request at a time on each) in two runs and divides the difference
# by 2N, so start-up, seeding and shutdown cancel. Instruction counts do not depend on what else the
# machine does, which makes this the figure to compare server-layer changes by on a shared machine.
#
#   bench/callgrind-http.sh [cofferd] [N]     (default: the release build, N = 2000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cofferd=${1:-$(cd "$root" && swift build -c release --toolset packaging/lld-toolset.json -Xswiftc -static-stdlib --show-bin-path)/cofferd}
n=${2:-2000}
work=$(mktemp -d /tmp/coffer-callgrind-http.XXXXXX)
trap 'rm -rf "$work"' EXIT
objcopy --strip-debug "$cofferd" "$work/cofferd"  # valgrind 3.19 cannot read lld's DWARF
total() {
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1" "$work/cofferd" -dev -dev-root-token-id=root \
        "-dev-listen-address=127.0.0.1:$port" -log-level=error > "$work/log.$1" 2>&1 &
    local pid=$!
    python3 - "$port" "$1" "$root" <<'PY'
import socket, sys, time, urllib.request
port, n, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, root + "/bench")
import bench
deadline = time.monotonic() + 300
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/sys/health", timeout=5).read()
        break
    except Exception:
        assert time.monotonic() < deadline, "cofferd did not start under callgrind"
        time.sleep(0.5)
token = bench.seed(port, False)["BENCH_TOKEN"]
request = (f"GET /v1/secret/data/bench/hot HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Vault-Token: {token}\r\n"
           "Content-Type: application/json\r\n\r\n").encode()
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
buffers = [b""] * 4
for i in range(n):
    k = i % 4
    conns[k].sendall(request)
    data = buffers[k]
    while b"\r\n\r\n" not in data:
        data += conns[k].recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    while len(rest) < length:
        rest += conns[k].recv(65536)
    buffers[k] = rest[length:]
for c in conns:
    c.close()
PY
    kill -TERM "$pid"
    wait "$pid" || true
    sed -n 's/^summary: //p' "$work/cg.$1"* | awk '{s += $1} END {print s}'
}
a=$(total "$n")
b=$(total $((3 * n)))
echo "instructions per HTTP KV read (all threads): $(((b - a) / (2 * n)))"
if [ -n "${KEEP:-}" ]; then cat "$work/cg.$((3 * n))"* > "$KEEP"; echo "profile: $KEEP"; fi
