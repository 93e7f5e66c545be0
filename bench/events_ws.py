"""Event latency over cofferd's WebSocket (issue 20 item 1; docs/events.md): a write → the event frame.

    python bench/events_ws.py --cofferd PATH [--iterations N] [--json OUT]

Starts `cofferd -dev` on a free loopback port, subscribes to kv-v2/data-write with the `websockets`
client, then, one at a time, writes a KV v2 secret over HTTP (a kept-alive requests session) and waits
for its event frame. The figure is the time from sending the write to receiving the frame (so it
includes the write itself); the write alone, and the frame's arrival after the write's response, are
measured in the same loop.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import requests
from websockets.sync.client import connect

from benchlib import free_port


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def run(cofferd, iterations):
    addr = f"127.0.0.1:{free_port()}"
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([cofferd, "-dev", "-dev-root-token-id=root", f"-dev-listen-address={addr}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        session = requests.Session()
        deadline = time.monotonic() + 30
        while True:
            try:
                if session.get(f"http://{addr}/v1/sys/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("cofferd did not start")
            time.sleep(0.05)
        headers = {"X-Vault-Token": "root"}
        with connect(f"ws://{addr}/v1/sys/events/subscribe/kv-v2/data-write?json=true",
                     additional_headers=headers, open_timeout=10) as ws:
            event_us, write_us, after_us = [], [], []
            for i in range(iterations + 100):
                start = time.perf_counter_ns()
                r = session.put(f"http://{addr}/v1/secret/data/bench", headers=headers, json={"data": {"i": i}},
                                timeout=10)
                written = time.perf_counter_ns()
                assert r.status_code == 200, r.text
                frame = json.loads(ws.recv(timeout=10))
                received = time.perf_counter_ns()
                assert frame["data"]["event"]["metadata"]["current_version"] == str(i + 1)
                if i >= 100:  # warm-up
                    event_us.append((received - start) / 1000)
                    write_us.append((written - start) / 1000)
                    after_us.append((received - written) / 1000)
        event_us.sort()
        write_us.sort()
        after_us.sort()
        return {
            "name": "event: kv write → WebSocket frame (cofferd)", "n": len(event_us),
            "p50_us": percentile(event_us, 0.5), "p99_us": percentile(event_us, 0.99), "max_us": event_us[-1],
            "write_p50_us": percentile(write_us, 0.5), "write_p99_us": percentile(write_us, 0.99),
            "after_response_p50_us": percentile(after_us, 0.5), "after_response_p99_us": percentile(after_us, 0.99),
        }
    finally:
        proc.terminate()
        proc.wait(15)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cofferd", required=True)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = run(args.cofferd, args.iterations)
    print(f"  {result['name']}: p50 {result['p50_us']:.0f} µs, p99 {result['p99_us']:.0f} µs "
          f"(the write alone: p50 {result['write_p50_us']:.0f} µs, p99 {result['write_p99_us']:.0f} µs; "
          f"the frame after the write's response: p50 {result['after_response_p50_us']:.0f} µs, "
          f"p99 {result['after_response_p99_us']:.0f} µs)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
