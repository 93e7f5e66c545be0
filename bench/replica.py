#!/usr/bin/env python3
"""An embedded replica's reads beside a local vault's, in one process (issue 18's goal: a replica read
within 1.5x of a local in-process read).

    COFFER_LIBRARY=.build/stage/lib/libcoffer.so.0 python3 bench/replica.py --cofferd <release cofferd>

Starts one cofferd with storage "raft" (the cluster's active node), opens in this process (a) a local
vault on its own SQLite file and (b) an embedded replica of the cluster (coffer_open with raft storage),
writes the same secret to both, and reads it through the same Python binding (coffer_kv_get) in
alternating blocks: the binding's cost is in both, so the ratio is the replica's. Prints p50, p99 and max
of each and the p50 ratio; writes JSON with --out.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bindings", "python"))
import coffer  # noqa: E402

from benchlib import free_port  # noqa: E402


def call(addr, method, path, body=None, token=None):
    req = urllib.request.Request(f"{addr}/v1/{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("X-Vault-Token", token)
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
        return json.loads(text) if text else {}


def wait(what, predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.05)


def sample(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def stats(samples):
    s = sorted(samples)
    return {"n": len(s), "p50_us": statistics.median(s), "p99_us": s[int(0.99 * (len(s) - 1))], "max_us": s[-1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cofferd", required=True)
    ap.add_argument("--reads", type=int, default=20000)
    ap.add_argument("--out")
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="coffer-bench-replica-")
    port, cport = free_port(), free_port()
    addr = f"http://127.0.0.1:{port}"
    with open(f"{scratch}/node.hcl", "w") as f:
        f.write(f'storage "raft" {{\n  path = "{scratch}/node"\n  node_id = "server"\n}}\n'
                f'listener "tcp" {{ address = "127.0.0.1:{port}" tls_disable = true }}\n'
                f'api_addr = "{addr}"\ncluster_addr = "127.0.0.1:{cport}"\n')
    log = open(f"{scratch}/cofferd.log", "ab")
    server = subprocess.Popen([args.cofferd, f"-config={scratch}/node.hcl"], stdout=log, stderr=log)
    try:
        def up():
            try:
                call(addr, "GET", "sys/seal-status")
                return True
            except OSError:
                return False
        wait("cofferd", up)
        init = call(addr, "PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        key, token = init["keys_base64"][0], init["root_token"]
        call(addr, "PUT", "sys/unseal", {"key": key})
        wait("active", lambda: call(addr, "GET", "sys/leader").get("is_self"))
        call(addr, "POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}, token=token)
        secret = {"username": "app", "password": "x" * 32}
        call(addr, "POST", "secret/data/bench", {"data": secret}, token=token)

        local = coffer.open({"storage": {"type": "sqlite", "path": f"{scratch}/local.db"}})
        body = local.request("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}).body
        local.request("PUT", "sys/unseal", {"key": body["keys_base64"][0]})
        local.token = body["root_token"]
        local.request("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}})
        local.kv.put("bench", secret)

        replica = coffer.open({"storage": {"type": "raft", "path": f"{scratch}/replica", "node_id": "bench-replica",
                                           "cluster_addr": f"127.0.0.1:{free_port()}", "retry_join": [addr]}},
                              token=token)
        wait("the join challenge", lambda: replica.request("GET", "sys/seal-status").body.get("t") == 1)
        replica.request("PUT", "sys/unseal", {"key": key})
        wait("the replica", lambda: not replica.request("GET", "sys/seal-status").body["sealed"])
        wait("the secret on the replica", lambda: _get(replica) == secret)

        runs = {"local": [], "replica": []}
        block = 1000
        for _ in range(max(1, args.reads // block)):
            for name, handle in (("local", local), ("replica", replica)):
                runs[name] += sample(lambda: handle.kv.get("bench"), block)
        result = {name: stats(s) for name, s in runs.items()}
        result["p50_ratio_replica_over_local"] = result["replica"]["p50_us"] / result["local"]["p50_us"]
        for name in ("local", "replica"):
            r = result[name]
            print(f"{name:8} p50 {r['p50_us']:7.1f} us  p99 {r['p99_us']:7.1f} us  max {r['max_us']:8.1f} us  (n={r['n']})")
        ratio = result["p50_ratio_replica_over_local"]
        print(f"replica / local p50: {ratio:.2f}x (goal <= 1.5x: {'met' if ratio <= 1.5 else 'not met'})")
        replica.close()
        local.close()
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)
    finally:
        server.terminate()
        server.wait(timeout=15)
        shutil.rmtree(scratch, ignore_errors=True)


def _get(handle):
    try:
        return handle.kv.get("bench").data
    except coffer.NotFoundError:
        return None


if __name__ == "__main__":
    main()
