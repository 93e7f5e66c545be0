#!/usr/bin/env python3
"""A/B of cofferd builds over HTTP, for a change to the server layer on a shared, noisy machine.

    python3 bench/http_ab.py --rounds 8 --seconds 5 before=/tmp/cofferd-old after=.build/release/cofferd

Starts each cofferd -dev (in memory) and nginx serving a file of the same size as the KV read's body,
then runs wrk (bench/http/wrk.lua, 1 thread, 16 connections) against each in alternating rounds
(the order reversed every round), so that a neighbour's load falls on all of them alike. Reports, per
system, the median round's requests/s and p99, the ratio to nginx of the same round, and the server's
CPU time per request (user + system of the whole process, from /proc: unlike requests/s, it hardly
depends on what else runs).
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402
from benchlib import cpu_seconds  # noqa: E402


def start_nginx(scratch, body_size):
    root = B.tempfile.mkdtemp(prefix="nginx-", dir=scratch)
    os.chmod(scratch, 0o755)
    os.chmod(root, 0o755)
    os.makedirs(os.path.join(root, "logs"), exist_ok=True)
    document = B.json.dumps({"data": {"data": B.PAYLOAD}})
    document = document[:-1] + " " * max(0, body_size - len(document)) + "}"
    with open(os.path.join(root, "secret.json"), "w") as f:
        f.write(document)
    os.chmod(os.path.join(root, "secret.json"), 0o644)
    port = B.free_port()
    with open(os.path.join(root, "nginx.conf"), "w") as f:
        f.write(f"""worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/logs/error.log error;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location / {{ default_type application/json; try_files /secret.json =404; }}
  }}
}}
""")
    server = B.Server("nginx", [B.shutil.which("nginx"), "-p", root, "-c", os.path.join(root, "nginx.conf"),
                                "-g", "daemon off;"], port, os.path.join(root, "logs", "stdout.log"),
                      ready_path="/v1/secret/data/bench/hot")
    return server, port


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workload", default="kv_read")
    parser.add_argument("builds", nargs="+", help="name=path of a cofferd binary")
    args = parser.parse_args()
    scratch = B.tempfile.mkdtemp(prefix="coffer-ab-")
    servers, systems, envs = [], {}, {}
    try:
        for spec in args.builds:
            name, path = spec.split("=", 1)
            port = B.free_port()
            server = B.Server(name, [path, "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
                                     "-log-level=error"], port, os.path.join(scratch, f"{name}.log"))
            servers.append(server)
            systems[name] = (port, server.process.pid)
            envs[name] = B.seed(port, args.workload.startswith("transit"))
        first = next(iter(systems))
        body_size = len(B.urllib.request.urlopen(B.urllib.request.Request(
            f"http://127.0.0.1:{systems[first][0]}/v1/secret/data/bench/hot",
            headers={"X-Vault-Token": envs[first]["BENCH_TOKEN"]})).read())
        nginx, nginx_port = start_nginx(scratch, body_size)
        servers.append(nginx)
        order = list(systems) + ["nginx"]
        rows = {name: [] for name in order}
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else list(reversed(order))):
                B.progress(f"{args.workload} {name} round {r + 1}/{args.rounds}")
                if name == "nginx":
                    result = B.wrk(nginx_port, "static", {}, args.seconds, args.connections)
                else:
                    port, pid = systems[name]
                    before = cpu_seconds(pid)
                    result = B.wrk(port, args.workload, envs[name], args.seconds, args.connections)
                    result["cpu_us_per_request"] = (cpu_seconds(pid) - before) * 1e6 / result["requests"]
                rows[name].append(result)
        print(f"\n{args.workload}: {args.rounds} alternating rounds of {args.seconds} s, wrk -t1 -c{args.connections}, "
              f"load average at the end {os.getloadavg()[0]:.1f}\n")
        print("| system | requests/s (median round) | rounds | p99 ms (median) | / nginx (median of rounds) "
              "| CPU µs per request (median) |")
        print("| --- | ---: | --- | ---: | ---: | ---: |")
        for name in order:
            rates = [x["requests_per_s"] for x in rows[name]]
            ratios = [x["requests_per_s"] / n["requests_per_s"] for x, n in zip(rows[name], rows["nginx"])]
            cpu = [x["cpu_us_per_request"] for x in rows[name] if "cpu_us_per_request" in x]
            print(f"| {name} | {statistics.median(rates):,.0f} | {', '.join(f'{v:,.0f}' for v in rates)} | "
                  f"{statistics.median(x['p99_us'] for x in rows[name]) / 1000:.2f} | {statistics.median(ratios):.2f} | "
                  f"{statistics.median(cpu):.1f} |" if cpu else
                  f"| {name} | {statistics.median(rates):,.0f} | {', '.join(f'{v:,.0f}' for v in rates)} | "
                  f"{statistics.median(x['p99_us'] for x in rows[name]) / 1000:.2f} | 1.00 | |")
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
