#!/usr/bin/env python3
"""Coffer's benchmark driver: runs every part, merges the figures, prints a Markdown table, writes
a JSON results file and (with --smoke) gates CI on bench/thresholds.json.

    python3 bench/bench.py            the full comparison (`make bench`): in-process, C ABI, scale,
                                      SoftHSM, and over HTTP cofferd against OpenBao and nginx
    python3 bench/bench.py --smoke    the CI gate (`make bench-smoke`): short runs, thresholds

The Makefile builds what this runs (release builds, the staged libcoffer install, bench/c); this
script only runs and measures. Standard library only. Every server it starts listens on 127.0.0.1
and is stopped before it returns, also when it fails.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from benchlib import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, ".build")
# The Makefile passes where its release builds are (`swift build $(RELEASE) --show-bin-path`).
RELEASE = os.environ.get("COFFER_RELEASE_BIN") or os.path.join(BUILD, "release")
BENCH_OUT = os.path.join(BUILD, "bench")
MALLOC_COUNT = os.path.join(BENCH_OUT, "libmalloccount.so")
STARTED = time.monotonic()
KV_READ = "kv read (Swift API, handle)"
FLOOR_SQLITE = "floor: sqlite point read (raw C)"
FLOOR_AES = "floor: aes-256-gcm open (raw EVP)"
SPIN_FLOOR = "floor: cpu spin of the kv read's p50 (the machine's tail)"
AUDIT_FLOOR = "floor: the two audit records of a kv read (raw C)"
C_SPIN_FLOOR = "c floor: cpu spin of coffer_kv_get's p50 (the machine's tail)"
KV_READ_ALONE = "kv read (alone)"
KV_READ_WRITER = "kv read (one concurrent writer)"
KV_READ_WRITER_PINNED = "kv read (one concurrent writer, other core)"
CREDS_FLOOR = "floor: CREATE ROLE + GRANT (one query, kept libpq connection)"
CREDS_HANDLE = "creds (Swift API, handle; SQLite)"
CREDS_ROLE = {
    "db_name": "pg",
    "creation_statements": ['CREATE ROLE "{{name}}" WITH LOGIN PASSWORD \'{{password}}\' VALID UNTIL \'{{expiration}}\';',
                            'GRANT SELECT ON items TO "{{name}}";'],
    "revocation_statements": ['REVOKE ALL ON items FROM "{{name}}"; DROP ROLE IF EXISTS "{{name}}";'],
    "default_ttl": "1h", "max_ttl": "24h",
}


def progress(message):
    elapsed = int(time.monotonic() - STARTED)
    sys.stderr.write(f"[bench {elapsed // 60:02d}:{elapsed % 60:02d}] {message}\n")
    sys.stderr.flush()


def run_tool(command, env=None, echo=True, timeout=1800):
    """Runs a benchmark program, showing its lines as progress; fails loudly on a non-zero exit."""
    progress("$ " + " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in command))
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if echo and line.strip():
            sys.stderr.write("    " + line)
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"bench: {command[0]} ran past {timeout} s")
    if process.wait() != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed (exit {process.returncode}):\n{''.join(lines[-20:])}")
    return "".join(lines)


def preload_env():
    env = dict(os.environ)
    if os.path.exists(MALLOC_COUNT):
        env["LD_PRELOAD"] = MALLOC_COUNT
    return env


def read_json(path):
    with open(path) as f:
        return json.load(f)


# ---- The parts ---------------------------------------------------------------------------------

def inprocess(iterations, scratch):
    out = os.path.join(scratch, "inprocess.json")
    run_tool([os.path.join(RELEASE, "coffer-bench"), "inprocess", "--iterations", str(iterations), "--json", out], env=preload_env())
    return read_json(out)


def c_abi(iterations, scratch):
    kvbench = os.path.join(BENCH_OUT, "kvbench")
    if not os.path.exists(kvbench):
        raise SystemExit(f"bench: {kvbench} is missing; `make bench` builds it (make -C bench/c)")
    directory = tempfile.mkdtemp(prefix="c-", dir=scratch)
    out = os.path.join(scratch, "c.json")
    run_tool([kvbench, directory, out, str(iterations)], env=preload_env())
    return read_json(out)


def scale(sizes, iterations, scratch):
    results = []
    for size in sizes:
        out = os.path.join(scratch, f"scale-{size}.json")
        common = [os.path.join(RELEASE, "coffer-bench"), "scale", "--secrets", str(size), "--data-dir", os.path.join(BUILD, "bench-data")]
        run_tool(common + ["--build-only"], timeout=3600)
        run_tool(common + ["--iterations", str(iterations), "--json", out])
        results.append(read_json(out))
    return results


def namespaces(sizes, scratch):
    """Issue 19: open + unseal time and memory with N namespaces (each with a KV v2 mount), one size per process."""
    results = []
    for size in sizes:
        out = os.path.join(scratch, f"namespaces-{size}.json")
        common = [os.path.join(RELEASE, "coffer-bench"), "namespaces", "--secrets", str(size),
                  "--data-dir", os.path.join(BUILD, "bench-data")]
        run_tool(common + ["--build-only"], timeout=3600)
        run_tool(common + ["--iterations", "20000", "--json", out])
        results.append(read_json(out))
    return results


def hsm(runs, scratch):
    out = os.path.join(scratch, "hsm.json")
    run_tool([os.path.join(RELEASE, "coffer-bench"), "hsm", "--runs", str(runs), "--json", out])
    return read_json(out)


class PostgresHelper:
    """A PostgreSQL of its own (`coffer-bench postgres`: Tests/Support/DatabaseServers.swift's fixture),
    shared by the in-process database bench and the HTTP comparison; stopped when its stdin closes."""

    def __init__(self):
        command = [os.path.join(RELEASE, "coffer-bench"), "postgres"]
        progress("$ " + " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in command))
        self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise SystemExit("bench: coffer-bench postgres did not start a PostgreSQL")
        info = json.loads(line)
        self.port, self.password = info["port"], info["password"]
        self.url = f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def stop(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def database(scratch, creds, rounds, leases, chunks, opens, cofferd=None, http_rounds=0, http_per_round=0):
    """Issue 15: creds and lease expiry in-process against their floors, then (with cofferd) creds over
    HTTP against OpenBao; all against one PostgreSQL."""
    out = os.path.join(scratch, "database.json")
    postgres = PostgresHelper()
    try:
        run_tool([os.path.join(RELEASE, "coffer-bench"), "database", "--creds", str(creds), "--rounds", str(rounds),
                  "--leases", str(leases), "--chunks", str(chunks), "--opens", str(opens),
                  "--postgres-port", str(postgres.port), "--postgres-password", postgres.password, "--json", out],
                 timeout=3600)
        result = read_json(out)
        if cofferd:
            result["http"] = http_creds(cofferd, scratch, postgres, http_rounds, http_per_round)
        return result
    finally:
        postgres.stop()


def latency_summary(samples_ns):
    ordered = sorted(samples_ns)
    def at(p):
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] / 1000
    return {"n": len(ordered), "p50_us": at(0.50), "p90_us": at(0.90), "p99_us": at(0.99), "max_us": ordered[-1] / 1000}


def http_creds(cofferd, scratch, postgres, rounds, per_round):
    """GET database/creds/ro over HTTP, cofferd -dev against bao server -dev (same role, same PostgreSQL),
    one keep-alive connection each from this process (the same client), in alternating rounds; the
    round's leases revoked (revoke-prefix) after it, outside the timings."""
    import http.client
    bao = os.path.join(ROOT, ".venv", "bin", "bao")
    servers = []
    try:
        systems = {}
        port = free_port()
        servers.append(Server("cofferd", [cofferd, "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
                                          "-log-level=error"], port, os.path.join(scratch, "cofferd-db.log")))
        systems["coffer"] = port
        port = free_port()
        servers.append(Server("bao", [bao, "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
                                      "-log-level=error"], port, os.path.join(scratch, "bao-db.log"),
                              env={**os.environ, "HOME": scratch}))
        systems["openbao"] = port
        for port in systems.values():
            api(port, "POST", "sys/mounts/database", "root", {"type": "database"})
            api(port, "POST", "database/config/pg", "root", {
                "plugin_name": "postgresql-database-plugin", "connection_url": postgres.url,
                "username": "postgres", "password": postgres.password, "allowed_roles": "*"})
            api(port, "POST", "database/roles/ro", "root", CREDS_ROLE)
        connections = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for name, port in systems.items()}

        def creds(name):
            connection = connections[name]
            start = time.perf_counter_ns()
            connection.request("GET", "/v1/database/creds/ro", headers={"X-Vault-Token": "root"})
            response = connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter_ns() - start
            if response.status != 200 or b'"username"' not in body:
                raise SystemExit(f"bench: {name} creds answered {response.status}: {body[:300]!r}")
            return elapsed

        samples = {name: [] for name in systems}
        round_p99 = {name: [] for name in systems}
        for name in systems:
            for _ in range(max(10, per_round // 5)):
                creds(name)
            api(systems[name], "PUT", "sys/leases/revoke-prefix/database/creds/ro", "root", {})
        for r in range(rounds):
            for name, port in (systems.items() if r % 2 == 0 else reversed(list(systems.items()))):
                progress(f"http creds: {name} round {r + 1}/{rounds} ({per_round} requests)")
                got = [creds(name) for _ in range(per_round)]
                samples[name] += got
                round_p99[name].append(latency_summary(got)["p99_us"])
                api(port, "PUT", "sys/leases/revoke-prefix/database/creds/ro", "root", {})
        for connection in connections.values():
            connection.close()
    finally:
        for server in servers:
            server.stop()
    out = {"rounds": rounds, "per_round": per_round}
    for name in systems:
        out[name] = {**latency_summary(samples[name]), "round_p99_us": round_p99[name]}
    return out


# ---- PKI: issue against the OpenSSL floor, over HTTP against OpenBao, revocation and the CRL ------

PKI_EC_FLOOR = "floor: EC P-256 keygen + leaf + sign + DER (C, OpenSSL)"
PKI_EC_X509API = "reference: the same leaf through OpenSSL's X509 API (C)"
PKI_EC_FLOOR_STORED = "floor + one durable SQLite write of the certificate (WAL, synchronous=FULL)"
PKI_EC_NOSTORE = "issue EC P-256 (Swift API, handle; no_store role, SQLite)"
PKI_EC_STORED = "issue EC P-256 (Swift API, handle; default role, stored, SQLite)"
PKI_EC_STORED_MEMORY = "issue EC P-256 (Swift API, handle; default role, stored, memory storage)"
PKI_RSA_FLOOR = "floor: RSA-2048 keygen (C, OpenSSL)"
PKI_RSA = "issue RSA-2048 (Swift API, handle; default role, stored, SQLite)"
PKI_ROOT = {"common_name": "Coffer Bench Root", "key_type": "ec", "key_bits": 256, "ttl": "87600h"}
PKI_ROLE = {"allowed_domains": ["example.com"], "allow_subdomains": True, "key_type": "ec", "key_bits": 256,
            "ttl": "72h", "max_ttl": "720h"}
PKI_ISSUE = {"common_name": "leaf.example.com"}


def pki(scratch, issues, rounds, rsa_issues, revokes, cofferd=None, http_rounds=0, http_per_round=0, http_revokes=0):
    """The PKI engine: EC P-256 (and RSA-2048) issue in-process against the OpenSSL floor measured in the
    same process in alternating rounds (bench/c/pkifloor.c, loaded with dlopen), revocation of `revokes`
    certificates one by one with a CRL fetch after each; then (with cofferd) issue and revoke + CRL over
    HTTP against OpenBao."""
    floor = os.path.join(BENCH_OUT, "libpkifloor.so")
    if not os.path.exists(floor):
        # `make bench` builds it (bench/c's all); for the smoke gate and --parts runs, the C file alone
        # (OpenSSL only, about a second).
        run_tool(["make", "-C", os.path.join(ROOT, "bench", "c"), "pkifloor"])
    out = os.path.join(scratch, "pki.json")
    run_tool([os.path.join(RELEASE, "coffer-bench"), "pki", "--iterations", str(issues), "--rounds", str(rounds),
              "--runs", str(rsa_issues), "--secrets", str(revokes), "--json", out],
             env={**os.environ, "COFFER_PKI_FLOOR": floor}, timeout=3600)
    result = read_json(out)
    if cofferd:
        result["http"] = http_pki(cofferd, scratch, http_rounds, http_per_round, http_revokes)
    return result


def pki_setup(port):
    """The same mount, EC P-256 root and roles on each server: `bench` (certificates stored) and
    `bench-nostore` (no_store: no per-certificate write)."""
    api(port, "POST", "sys/mounts/pki", "root", {"type": "pki", "config": {"max_lease_ttl": "87600h"}})
    api(port, "POST", "pki/root/generate/internal", "root", PKI_ROOT)
    api(port, "POST", "pki/roles/bench", "root", PKI_ROLE)
    api(port, "POST", "pki/roles/bench-nostore", "root", {**PKI_ROLE, "no_store": True})


def http_pki(cofferd, scratch, rounds, per_round, revokes):
    """POST pki/issue/<role> over HTTP, cofferd -dev against bao server -dev (same root, roles and request),
    one keep-alive connection each from this process (the same client: Python's http.client), in
    alternating rounds, for both roles. Then, with `revokes`, a reference for the CRL: that many
    certificates revoked one by one on each server, each followed by GET pki/crl."""
    import http.client
    bao = os.path.join(ROOT, ".venv", "bin", "bao")
    servers = []
    body = json.dumps(PKI_ISSUE)
    try:
        systems = {}
        port = free_port()
        servers.append(Server("cofferd", [cofferd, "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
                                          "-log-level=error"], port, os.path.join(scratch, "cofferd-pki.log")))
        systems["coffer"] = port
        port = free_port()
        servers.append(Server("bao", [bao, "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
                                      "-log-level=error"], port, os.path.join(scratch, "bao-pki.log"),
                              env={**os.environ, "HOME": scratch}))
        systems["openbao"] = port
        for port in systems.values():
            pki_setup(port)
        connections = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=60) for name, port in systems.items()}
        headers = {"X-Vault-Token": "root", "Content-Type": "application/json"}

        def call(name, method, path, payload=None):
            connection = connections[name]
            start = time.perf_counter_ns()
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
            return time.perf_counter_ns() - start, response, data

        def issue(name, role):
            elapsed, response, data = call(name, "POST", f"/v1/pki/issue/{role}", body)
            if response.status != 200 or b'"certificate"' not in data:
                raise SystemExit(f"bench: {name} pki/issue/{role} answered {response.status}: {data[:300]!r}")
            return elapsed, data

        out = {"rounds": rounds, "per_round": per_round, "client": "Python http.client, one keep-alive connection per server",
               "roles": {}}
        for role in ("bench", "bench-nostore"):
            for name in systems:
                for _ in range(max(10, per_round // 5)):
                    issue(name, role)
            samples = {name: [] for name in systems}
            round_p99 = {name: [] for name in systems}
            for r in range(rounds):
                for name in (list(systems) if r % 2 == 0 else list(reversed(list(systems)))):
                    progress(f"http pki/issue/{role}: {name} round {r + 1}/{rounds} ({per_round} requests)")
                    got = [issue(name, role)[0] for _ in range(per_round)]
                    samples[name] += got
                    round_p99[name].append(latency_summary(got)["p99_us"])
            out["roles"][role] = {name: {**latency_summary(samples[name]), "round_p99_us": round_p99[name]} for name in systems}
        out["response_bytes"] = {name: len(issue(name, "bench")[1]) for name in systems}

        if revokes:
            # Certificates issued first (outside the timings), then revoked one by one with a CRL fetch
            # after each; the servers alternate in blocks of a tenth so that both see the same noise.
            serials = {name: [json.loads(issue(name, "bench")[1])["data"]["serial_number"] for _ in range(revokes)]
                       for name in systems}
            timings = {name: {"revoke": [], "crl": []} for name in systems}
            crl_bytes = {}
            block = max(1, revokes // 10)
            for start in range(0, revokes, block):
                order = list(systems) if (start // block) % 2 == 0 else list(reversed(list(systems)))
                for name in order:
                    progress(f"http revoke + GET pki/crl: {name} {start + 1}-{min(revokes, start + block)} of {revokes}")
                    for serial in serials[name][start:start + block]:
                        elapsed, response, data = call(name, "POST", "/v1/pki/revoke", json.dumps({"serial_number": serial}))
                        if response.status != 200:
                            raise SystemExit(f"bench: {name} pki/revoke answered {response.status}: {data[:300]!r}")
                        fetched, response, crl = call(name, "GET", "/v1/pki/crl")
                        if response.status != 200 or not crl:
                            raise SystemExit(f"bench: {name} GET pki/crl answered {response.status}: {crl[:300]!r}")
                        timings[name]["revoke"].append(elapsed)
                        timings[name]["crl"].append(fetched)
                        crl_bytes[name] = len(crl)
            edge = max(1, revokes // 10)
            out["revoke"] = {"revokes": revokes, "edge": edge}
            for name in systems:
                both = [a + b for a, b in zip(timings[name]["revoke"], timings[name]["crl"])]
                first, last = latency_summary(both[:edge]), latency_summary(both[-edge:])
                out["revoke"][name] = {"first": first, "last": last, "p50_ratio": last["p50_us"] / first["p50_us"],
                                       "crl_bytes": crl_bytes[name]}
        for connection in connections.values():
            connection.close()
    finally:
        for server in servers:
            server.stop()
    return out


def pki_thresholds():
    return read_json(os.path.join(ROOT, "bench", "thresholds.json"))["pki"]


def pki_goals(p, g):
    """The PKI goals (limits from bench/thresholds.json's pki.goals)."""
    if not p:
        return [("PKI: issue against the OpenSSL floor, over HTTP against OpenBao, revocation and the CRL",
                 "not measured in this run", None)]
    goals = []
    f = figures_by_name(p)
    s = p["summary"]
    floor = f.get(PKI_EC_FLOOR)
    for name, label in ((PKI_EC_NOSTORE, "no_store role"), (PKI_EC_STORED, "default role, each certificate stored")):
        r = f.get(name)
        if floor and r:
            ratio = r["p50_us"] / floor["p50_us"]
            measured = (f"{ratio:.2f}× ({r['p50_us']:.0f} µs against {floor['p50_us']:.0f} µs; median of the rounds' "
                        f"ratios {s.get(name + ' / floor, median round', 0):.2f}×)")
            stored_floor = f.get(PKI_EC_FLOOR_STORED)
            if name == PKI_EC_STORED and stored_floor:
                measured += (f"; against the floor plus one durable SQLite write ({stored_floor['p50_us']:.0f} µs) "
                             f"{r['p50_us'] / stored_floor['p50_us']:.2f}×")
            goals.append((f"PKI issue EC P-256 in-process ({label}, SQLite) p50 ≤ {g['ec_issue_p50_over_floor']}× the OpenSSL floor",
                          measured, ratio <= g["ec_issue_p50_over_floor"]))
    web = (p.get("http") or {}).get("roles", {})
    for role, label in (("bench", "default role"), ("bench-nostore", "no_store role")):
        if role in web:
            c, b = web[role]["coffer"], web[role]["openbao"]
            rounds = statistics.median(x / y for x, y in zip(c["round_p99_us"], b["round_p99_us"]))
            goals.append((f"PKI issue EC P-256 over HTTP ({label}): p99 ≤ {g['http_issue_p99_over_openbao']}× OpenBao's",
                          f"{c['p99_us'] / b['p99_us']:.2f}× ({c['p99_us'] / 1000:.2f} ms against {b['p99_us'] / 1000:.2f} ms; "
                          f"median of the rounds' p99 ratios {rounds:.2f}×)",
                          c["p99_us"] <= g["http_issue_p99_over_openbao"] * b["p99_us"]))
    rsa, rsa_floor = f.get(PKI_RSA), f.get(PKI_RSA_FLOOR)
    if rsa and rsa_floor:
        ratio = rsa["p50_us"] / rsa_floor["p50_us"]
        goals.append((f"PKI issue RSA-2048 p50 ≤ {g['rsa_issue_p50_over_keygen']}× OpenSSL's RSA-2048 keygen alone",
                      f"{ratio:.2f}× ({rsa['p50_us'] / 1000:.0f} ms against {rsa_floor['p50_us'] / 1000:.0f} ms, {rsa['n']} each)",
                      ratio <= g["rsa_issue_p50_over_keygen"]))
    revoke = s.get("revoke")
    if revoke:
        goals.append((f"revoke + GET pki/crl flat over {revoke['revokes']:,} revocations: the last {revoke['edge']:,} "
                      f"≤ {g['revoke_crl_last_over_first_p50']}× the first {revoke['edge']:,} (p50)",
                      f"{revoke['p50_ratio']:.2f}× ({revoke['last']['p50_us']:.0f} µs against {revoke['first']['p50_us']:.0f} µs; "
                      f"p99 {revoke['p99_ratio']:.2f}×; CRL {revoke['crl_bytes']:,} bytes at the end)",
                      revoke["p50_ratio"] <= g["revoke_crl_last_over_first_p50"]))
        # The revocation alone (the write and the CRL's bookkeeping): the fetch after it signs and
        # sends the whole CRL, whose size grows with every revocation by design.
        alone = revoke["last"]["revoke_p50_us"] / revoke["first"]["revoke_p50_us"]
        goals.append((f"revoke alone flat over {revoke['revokes']:,} revocations: the last {revoke['edge']:,} "
                      f"≤ {g['revoke_crl_last_over_first_p50']}× the first {revoke['edge']:,} (p50)",
                      f"{alone:.2f}× ({revoke['last']['revoke_p50_us']:.0f} µs against {revoke['first']['revoke_p50_us']:.0f} µs); "
                      f"the CRL fetch after it {revoke['first']['crl_p50_us']:.0f} → {revoke['last']['crl_p50_us']:.0f} µs, "
                      f"linear in the CRL's size",
                      alone <= g["revoke_crl_last_over_first_p50"]))
    return goals


def pki_table(p):
    """The PKI figures: issue in-process against its floor, over HTTP against OpenBao, revoke + CRL."""
    if not p:
        return []
    f = figures_by_name(p)
    s = p["summary"]
    floor, rsa_floor = f.get(PKI_EC_FLOOR), f.get(PKI_RSA_FLOOR)
    n = f[PKI_EC_FLOOR]["n"] if floor else 0
    lines = ["", f"### PKI: issue (in-process, one thread, {n:,} EC issues each in {s.get('rounds', '?')} alternating rounds; "
                 f"floor {s.get('floor_mode', '?')})", "",
             "| operation | p50 µs | p90 µs | p99 µs | max µs | CPU µs/op (process) | p50 / floor |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    stored_floor = f.get(PKI_EC_FLOOR_STORED)
    for name, r in f.items():
        reference = rsa_floor if "RSA" in name else floor
        ratio = f"{r['p50_us'] / reference['p50_us']:.2f}×" if reference else ""
        if name == PKI_EC_STORED and stored_floor:
            ratio += f" ({r['p50_us'] / stored_floor['p50_us']:.2f}× the floor + durable write)"
        cpu = f"{r['cpu_us_per_op']:.0f}" if "cpu_us_per_op" in r else ""
        lines.append(f"| {name} | {r['p50_us']:.1f} | {r['p90_us']:.1f} | {r['p99_us']:.1f} | {r['max_us']:.1f} | {cpu} | {ratio} |")
    web = p.get("http")
    if web:
        lines += ["", f"PKI over HTTP: `POST pki/issue/<role>` `{json.dumps(PKI_ISSUE)}`, {web['rounds']} alternating rounds of "
                      f"{web['per_round']} per role; {web['client']}; both dev servers in memory.", "",
                  "| role | system | p50 ms | p90 ms | p99 ms | max ms | p99 / OpenBao's |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for role, systems in web["roles"].items():
            for name in ("coffer", "openbao"):
                r = systems[name]
                ratio = f"{r['p99_us'] / systems['openbao']['p99_us']:.2f}×" if name == "coffer" else ""
                label = "cofferd -dev" if name == "coffer" else "bao server -dev"
                lines.append(f"| {role} | {label} | {r['p50_us'] / 1000:.2f} | {r['p90_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | "
                             f"{r['max_us'] / 1000:.2f} | {ratio} |")
    revoke = s.get("revoke")
    if revoke:
        lines += ["", f"### PKI: revoke one by one + `GET pki/crl` after each ({revoke['revokes']:,} certificates, SQLite vault, in-process)", "",
                  "| revocations | p50 µs | p99 µs | max µs | of which revoke p50 µs | of which GET pki/crl p50 µs |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for label, key in ((f"first {revoke['edge']:,}", "first"), (f"last {revoke['edge']:,}", "last")):
            r = revoke[key]
            lines.append(f"| {label} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['max_us']:.0f} | {r['revoke_p50_us']:.0f} | {r['crl_p50_us']:.0f} |")
        lines += ["", f"Last / first: p50 {revoke['p50_ratio']:.2f}×, p99 {revoke['p99_ratio']:.2f}×. CRL at the end: "
                      f"{revoke['crl_bytes']:,} bytes, {revoke['crl_entries']:,} entries. p50 of each tenth (µs): "
                      + ", ".join(f"{v:.0f}" for v in revoke["tenths_p50_us"]) + "."]
    web_revoke = (web or {}).get("revoke")
    if web_revoke:
        lines += ["", f"Reference over HTTP ({web_revoke['revokes']:,} revocations each, revoke + GET pki/crl, first against last "
                      f"{web_revoke['edge']:,}):", "",
                  "| system | first p50 ms | first p99 ms | last p50 ms | last p99 ms | last / first (p50) | CRL bytes at the end |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name in ("coffer", "openbao"):
            r = web_revoke[name]
            lines.append(f"| {'cofferd -dev' if name == 'coffer' else 'bao server -dev'} | {r['first']['p50_us'] / 1000:.2f} | "
                         f"{r['first']['p99_us'] / 1000:.2f} | {r['last']['p50_us'] / 1000:.2f} | {r['last']['p99_us'] / 1000:.2f} | "
                         f"{r['p50_ratio']:.2f}× | {r['crl_bytes']:,} |")
    return lines


def check_pki(p, limits):
    """The PKI smoke gate: wide margins over the ratios the 2-core machine measures (thresholds.json's pki.smoke)."""
    if not p:
        return ["pki: not measured"]
    failures = []
    s = p["summary"]
    for name in (PKI_EC_NOSTORE, PKI_EC_STORED):
        ratio = s.get(name + " / floor, median round")
        limit = limits["ec_issue_p50_over_floor_median_round"] if name == PKI_EC_NOSTORE else limits["ec_issue_stored_p50_over_floor_median_round"]
        if ratio is None or ratio > limit:
            failures.append(f"{name}: p50 over the floor's (median of the rounds) "
                            f"{'not measured' if ratio is None else f'{ratio:.2f}×'}, over the limit of {limit}×")
    f = figures_by_name(p)
    for name in (PKI_EC_NOSTORE, PKI_EC_STORED):
        if name in f and f[name]["p99_us"] > limits["issue_p99_ms"] * 1000:
            failures.append(f"{name}: p99 {f[name]['p99_us'] / 1000:.1f} ms, over {limits['issue_p99_ms']} ms")
    revoke = s.get("revoke")
    if not revoke:
        failures.append("pki revoke + CRL: not measured")
    elif revoke["p50_ratio"] > limits["revoke_crl_last_over_first_p50"]:
        failures.append(f"revoke + GET pki/crl: the last {revoke['edge']} take {revoke['p50_ratio']:.2f}× the first {revoke['edge']} "
                        f"(p50), over the limit of {limits['revoke_crl_last_over_first_p50']}×")
    return failures


# ---- HTTP: cofferd against OpenBao and nginx, driven by wrk --------------------------------------

class Server:
    """A server process on 127.0.0.1, stopped by stop() (SIGTERM, then SIGKILL).

    Not pinned: on this 2-core machine, pinning each server to one core (and wrk to the other) cut
    OpenBao to a third and cofferd to a half of their unpinned rates, so both run as people run them,
    sharing the cores with wrk."""

    def __init__(self, name, command, port, log, ready_path="/v1/sys/health", env=None):
        self.name, self.port = name, port
        self.log = open(log, "w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=1).read()
                break
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"bench: {name} did not start; see {log}")
                time.sleep(0.2)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def api(port, method, path, token=None, body=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    if token:
        request.add_header("X-Vault-Token", token)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
        return json.loads(text) if text else None


PAYLOAD = {"username": "service-account", "password": "p" * 64}
PLAINTEXT_64 = "YWFh" * 21 + "YQ=="  # base64 of 64 bytes of "a"


def seed(port, transit):
    """The same data on each server: a policy, a token with it, one secret; transit's key."""
    api(port, "PUT", "sys/policies/acl/bench", "root", {
        "policy": 'path "secret/data/bench/*" { capabilities = ["read", "create", "update"] }\n'
                  'path "transit/*" { capabilities = ["update"] }'})
    token = api(port, "POST", "auth/token/create", "root", {"policies": ["bench"], "ttl": "1h"})["auth"]["client_token"]
    api(port, "POST", "secret/data/bench/hot", token, {"data": PAYLOAD})
    env = {"BENCH_TOKEN": token}
    if transit:
        api(port, "POST", "sys/mounts/transit", "root", {"type": "transit"})
        api(port, "POST", "transit/keys/bench", "root", {})
        env["BENCH_CIPHERTEXT"] = api(port, "POST", "transit/encrypt/bench", token, {"plaintext": PLAINTEXT_64})["data"]["ciphertext"]
    return env


def process_cpu_s(pid):
    """User plus system CPU seconds of a process, all its threads, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port, workload, env, seconds, connections, pid=None):
    return run_wrk(port, os.path.join(ROOT, "bench", "http", "wrk.lua"), {**env, "WORKLOAD": workload}, seconds,
                   connections, workload, pid)


def run_wrk(port, script, env, seconds, connections, label, pid=None):
    """One wrk round (1 thread) of `script`; with the server's pid, also the server's CPU per request
    (all its threads)."""
    cpu_before = process_cpu_s(pid) if pid else None
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script,
               f"http://127.0.0.1:{port}"]
    output = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=seconds + 60)
    line = next((l for l in output.stdout.splitlines() if l.startswith("JSON ")), None)
    if output.returncode != 0 or line is None:
        raise SystemExit(f"bench: wrk failed against port {port}:\n{output.stdout}\n{output.stderr}")
    result = json.loads(line[5:])
    result["requests_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    if pid:
        result["server_cpu_us_per_request"] = (process_cpu_s(pid) - cpu_before) * 1e6 / max(result["requests"], 1)
    if result["errors"] or result["non2xx"]:
        raise SystemExit(f"bench: {label} on port {port} had {result['errors']} socket errors and "
                         f"{result['non2xx']} non-2xx answers:\n{output.stdout}")
    return result


def median_round(rounds):
    ordered = sorted(rounds, key=lambda r: r["requests_per_s"])
    best = dict(ordered[len(ordered) // 2])
    best["rounds_requests_per_s"] = [round(r["requests_per_s"]) for r in rounds]
    best["rounds_p99_us"] = [r["p99_us"] for r in rounds]
    if all("server_cpu_us_per_request" in r for r in rounds):
        cpu = sorted(r["server_cpu_us_per_request"] for r in rounds)
        best["server_cpu_us_per_request"] = cpu[len(cpu) // 2]
    return best


def audited_reads(systems, envs, pids, scratch, seconds, rounds, connections):
    """The KV read with a file audit device and without, on each server, in alternating rounds: the
    device is enabled before each audited round and disabled after it. Server CPU per request is the
    figure (the audit's work runs on threads of the server's own, which requests/s alone hides)."""
    collected = {name: {"kv_read": [], "kv_read_audited": []} for name in systems}
    for r in range(rounds):
        for name, port in (systems.items() if r % 2 == 0 else reversed(list(systems.items()))):
            progress(f"http kv_read with and without a file audit device: {name} round {r + 1}/{rounds}")
            collected[name]["kv_read"].append(wrk(port, "kv_read", envs[name], seconds, connections, pids[name]))
            api(port, "PUT", "sys/audit/file", "root",
                {"type": "file", "options": {"file_path": os.path.join(scratch, f"{name}-audit.log")}})
            try:
                collected[name]["kv_read_audited"].append(
                    wrk(port, "kv_read", envs[name], seconds, connections, pids[name]))
            finally:
                api(port, "DELETE", "sys/audit/file", "root")
    return {name: {w: median_round(rs) for w, rs in ws.items()} for name, ws in collected.items()}


def http(cofferd, scratch, seconds, rounds, connections, workloads, include_bao=True, include_nginx=True, audit_rounds=False):
    """Alternating rounds of each workload against cofferd and OpenBao (same data, same wrk settings)."""
    bao = os.path.join(ROOT, ".venv", "bin", "bao")
    servers = []
    try:
        progress(f"starting {os.path.relpath(cofferd, ROOT)} -dev (in memory) and bao server -dev on loopback")
        systems = {}
        port = free_port()
        servers.append(Server("cofferd", [cofferd, "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
                                          "-log-level=error"], port, os.path.join(scratch, "cofferd.log")))
        systems["coffer"] = port
        pids = {"coffer": servers[-1].process.pid}
        if include_bao:
            port = free_port()
            # OpenBao 2.x enables audit devices through the API only with this set (WIRE.md).
            config = os.path.join(scratch, "bao-dev.hcl")
            with open(config, "w") as f:
                f.write("unsafe_allow_api_audit_creation = true\n")
            servers.append(Server("bao", [bao, "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
                                          f"-config={config}", "-log-level=error"], port, os.path.join(scratch, "bao.log"),
                                  env={**os.environ, "HOME": scratch}))
            systems["openbao"] = port
            pids["openbao"] = servers[-1].process.pid
        transit = any(w.startswith("transit") for w in workloads)
        envs = {name: seed(port, transit) for name, port in systems.items()}
        results = {}
        for workload in workloads:
            collected = {name: [] for name in systems}
            for r in range(rounds):
                for name, port in (systems.items() if r % 2 == 0 else reversed(list(systems.items()))):
                    progress(f"http {workload}: {name} round {r + 1}/{rounds} ({seconds} s, {connections} connections)")
                    collected[name].append(wrk(port, workload, envs[name], seconds, connections, pids[name]))
            results[workload] = {name: median_round(rs) for name, rs in collected.items()}
        audit = audited_reads(systems, envs, pids, scratch, seconds, rounds, connections) if audit_rounds else None
        body_size = len(urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{systems['coffer']}/v1/secret/data/bench/hot",
            headers={"X-Vault-Token": envs["coffer"]["BENCH_TOKEN"]})).read())
    finally:
        for server in servers:
            server.stop()
    out = {"connections": connections, "seconds_per_round": seconds, "rounds": rounds, "workloads": results,
           "kv_read_body_bytes": body_size}
    if audit:
        out["audited_kv_read"] = audit
    if include_nginx and shutil.which("nginx"):
        out["nginx_static"] = nginx(scratch, body_size, seconds, rounds, connections)
    return out


def nginx(scratch, body_size, seconds, rounds, connections):
    """The HTTP floor: nginx (one worker) serving a static JSON file the size of Coffer's KV read."""
    # Its own directory, readable by nginx's unprivileged worker (www-data when started as root).
    root = tempfile.mkdtemp(prefix="nginx-", dir=scratch)
    os.chmod(scratch, 0o755)
    os.chmod(root, 0o755)
    os.makedirs(os.path.join(root, "logs"), exist_ok=True)
    document = json.dumps({"data": {"data": PAYLOAD}})
    document = document[:-1] + " " * max(0, body_size - len(document)) + "}"
    with open(os.path.join(root, "secret.json"), "w") as f:
        f.write(document)
    os.chmod(os.path.join(root, "secret.json"), 0o644)
    port = free_port()
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
    server = Server("nginx", [shutil.which("nginx"), "-p", root, "-c", os.path.join(root, "nginx.conf"), "-g", "daemon off;"],
                    port, os.path.join(root, "logs", "stdout.log"), ready_path="/v1/secret/data/bench/hot")
    try:
        results = []
        for r in range(rounds):
            progress(f"http static JSON ({body_size} bytes): nginx round {r + 1}/{rounds}")
            results.append(wrk(port, "static", {}, seconds, connections))
        return median_round(results)
    finally:
        server.stop()


# ---- Results -------------------------------------------------------------------------------------

def versions():
    def first_line(command):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=30)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except Exception:
            return None
    return {
        "swift": first_line(["swift", "--version"]),
        "openssl": first_line(["openssl", "version"]),
        "sqlite": first_line(["sqlite3", "--version"]),
        "openbao": first_line([os.path.join(ROOT, ".venv", "bin", "bao"), "version"]),
        "wrk": first_line(["wrk", "-v"]),
        "nginx": first_line(["nginx", "-v"]) if shutil.which("nginx") else None,
        "softhsm": first_line(["softhsm2-util", "--version"]),
        "python": platform.python_version(),
    }


def machine():
    model = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "load_average_at_start": load,
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "git_commit": commit + ("-dirty" if dirty else "")}


# Issue 20's goal for a cached read through the remote client (docs/delivery.md).
REMOTE_CACHED_READ = "remote client cached read (RemoteClient.read)"
REMOTE_CACHED_READ_P50_US = 1.0


def figures_by_name(*documents):
    out = {}
    for document in documents:
        for figure in (document or {}).get("results", []):
            out[figure["name"]] = figure
    return out


def machine_tail(read, spin):
    """The read's p99 against a CPU spin of its median, in alternating rounds of the same run (the spin has no
    memory, calls or locks: its p99 is what this machine does to any operation that long; docs/benchmarks.md)."""
    if not read or not spin:
        return ""
    return (f"; beside a CPU spin of its p50 (alternating rounds): p99 {read['p99_us']:.1f} µs against the "
            f"spin's {spin['p99_us']:.1f} µs ({read['p99_us'] / spin['p99_us']:.2f}×)")


def evaluate_goals(results):
    """The issue's goals, each with the measured figure and whether it is met (None: not measured)."""
    f = figures_by_name(results.get("inprocess"), results.get("c"))
    goals = []
    read = f.get(KV_READ)
    floor = (f[FLOOR_SQLITE]["p50_us"] + f[FLOOR_AES]["p50_us"]) if FLOOR_SQLITE in f and FLOOR_AES in f else None
    summary = (results.get("inprocess") or {}).get("summary", {})
    g = read_json(os.path.join(ROOT, "bench", "thresholds.json"))["read_path"]["goals"]
    # Issue 21: the read path at the floor.
    if read:
        measured = f"{read['p99_us']:.1f} µs (p50 {read['p50_us']:.2f} µs)"
        measured += machine_tail(f.get("kv read (Swift API, handle; beside a spin)"), f.get(SPIN_FLOOR))
        goals.append((f"in-process KV v2 read, one thread, p99 ≤ {g['kv_read_p99_us']} µs", measured,
                      read["p99_us"] <= g["kv_read_p99_us"]))
        goals.append((f"  the same, ≥ {g['kv_read_per_s']:,} reads/s", f"{read['ops_per_s']:,.0f}/s",
                      read["ops_per_s"] >= g["kv_read_per_s"]))
    if read and floor:
        ratio = read["p50_us"] / floor
        goals.append((f"  the same, p50 ≤ {g['kv_read_p50_over_floor']}× the floor (SQLite point read + GCM open, same run)",
                      f"{ratio:.2f}×", ratio <= g["kv_read_p50_over_floor"]))
    c_get = f.get("c: coffer_kv_get (fast path)")
    if c_get:
        measured = f"{c_get['p99_us']:.1f} µs (p50 {c_get['p50_us']:.2f} µs)"
        measured += machine_tail(f.get("c: coffer_kv_get (beside a spin)"), f.get(C_SPIN_FLOOR))
        goals.append((f"coffer_kv_get from C, p99 ≤ {g['c_kv_get_p99_us']} µs", measured,
                      c_get["p99_us"] <= g["c_kv_get_p99_us"]))
    # Issue 20: a cached read through the remote client's API (bench/InProcess/RemoteClient.swift).
    cached = f.get(REMOTE_CACHED_READ)
    if cached:
        goals.append((f"remote client cached read (RemoteClient.read), p50 ≤ {REMOTE_CACHED_READ_P50_US} µs",
                      f"{cached['p50_us']:.2f} µs", cached["p50_us"] <= REMOTE_CACHED_READ_P50_US))
    else:
        goals.append((f"remote client cached read (RemoteClient.read), p50 ≤ {REMOTE_CACHED_READ_P50_US} µs",
                      "not measured in this run", None))
    if "read_scaling_ratio" in summary:
        ratio = summary["read_scaling_ratio"]
        goals.append((f"{summary['read_scaling_threads']} threads / 1 thread KV read throughput ≥ {g['read_scaling_ratio']}× "
                      f"(median of alternating rounds, {os.cpu_count()} CPUs)",
                      f"{ratio:.2f}× ({summary['read_scaling_all_threads_per_s']:,.0f} against "
                      f"{summary['read_scaling_one_thread_per_s']:,.0f} reads/s); threads reading vaults of their own, "
                      f"the machine's ceiling: {summary.get('read_scaling_separate_vaults_ratio', float('nan')):.2f}×; "
                      f"the shared vault's two threads against those, round by round: "
                      f"{summary.get('read_scaling_over_separate', float('nan')):.2f}",
                      ratio >= g["read_scaling_ratio"]))
    # Issue 19: a read in a namespace against the same read at root (alternating rounds, same run).
    ns_goal = read_json(os.path.join(ROOT, "bench", "thresholds.json"))["namespaces"]["goals"]
    for key, how in (("namespace_read_prefix_p50_ratio", "path prefix"), ("namespace_read_header_p50_ratio", "header")):
        if key in summary:
            goals.append((f"KV read in a namespace ({how}) p50 ≤ {ns_goal['read_p50_ratio']}× the same read at root",
                          f"{summary[key]:.2f}×", summary[key] <= ns_goal["read_p50_ratio"]))
    sizes = {s["summary"]["namespaces"]: s["summary"] for s in results.get("namespaces") or []}
    if {0, 1_000, 10_000} <= set(sizes):
        def per(a, b, key):
            return (sizes[b][key] - sizes[a][key]) / (b - a)
        first, second = per(0, 1_000, "open_unseal_median_ms"), per(1_000, 10_000, "open_unseal_median_ms")
        goals.append(("open + unseal time per namespace flat from 1k to 10k (within 1.5×)",
                      f"{first * 1000:.0f} µs then {second * 1000:.0f} µs per namespace",
                      second <= 1.5 * first))
    # Audited reads run in alternating rounds against a reference read; the cost is the median over
    # the rounds of the throughput lost within a round (a neighbour slowing one phase moves both).
    reference = f.get("kv read (audit reference: no device)")

    def round_cost(name):
        a, b = f[name]["round_ops_per_s"], reference["round_ops_per_s"]
        return statistics.median(1 - x / y for x, y in zip(a, b))

    if reference and "kv read + file audit" in f:
        cpu = f["kv read + file audit"]["cpu_us_per_op"] / reference["cpu_us_per_op"]
        measured = f"{cpu:.2f}× (throughput lost on the calling thread: {round_cost('kv read + file audit') * 100:.0f}%)"
        if AUDIT_FLOOR in f:
            # The unaudited read plus the least its two records cost (hashed and written in raw C).
            floor = 1 + f[AUDIT_FLOOR]["cpu_us_per_op"] / reference["cpu_us_per_op"]
            measured += f"; the floor, the read plus its two records hashed and written in raw C: {floor:.2f}×"
        goals.append((f"audited KV read (file device, sync=writes): CPU of all threads ≤ {g['audited_read_cpu_ratio']}× an unaudited read",
                      measured, cpu <= g["audited_read_cpu_ratio"]))
        if "kv read + file audit, sync=all" in f:
            cpu = f["kv read + file audit, sync=all"]["cpu_us_per_op"] / reference["cpu_us_per_op"]
            goals.append(("  the same with sync=all (every record written before the call returns)", f"{cpu:.2f}×",
                          cpu <= g["audited_read_cpu_ratio"]))
        wire, wire_audited = f.get("kv read, wire JSON (audit reference: no device)"), f.get("kv read, wire JSON + file audit")
        if wire and wire_audited:
            cpu = wire_audited["cpu_us_per_op"] / wire["cpu_us_per_op"]
            goals.append(("  the same answered in JSON (HTTP, `coffer_request`), against the unaudited JSON read",
                          f"{cpu:.2f}× ({wire['cpu_us_per_op']:.2f} → {wire_audited['cpu_us_per_op']:.2f} µs)",
                          cpu <= g["audited_read_cpu_ratio"]))
    # Issue 19: a read under a generous rate-limit quota on its mount against the same read with none,
    # in alternating rounds of one run (bench/InProcess/Quota.swift).
    quota_ref, quota_read = f.get("quota: kv read, no quota (reference)"), f.get("quota: kv read, a rate-limit quota on the mount")
    if quota_ref and quota_read:
        ratio = quota_read["p50_us"] / quota_ref["p50_us"]
        goals.append((f"quota-checked KV read p50 ≤ {g['quota_read_p50_ratio']}× an unquoted one (same run)",
                      f"{ratio:.2f}×", ratio <= g["quota_read_p50_ratio"]))
    web = (results.get("http") or {}).get("workloads", {}).get("kv_read")
    nginx_static = (results.get("http") or {}).get("nginx_static")
    if web and nginx_static:
        ratio = web["coffer"]["requests_per_s"] / nginx_static["requests_per_s"]
        goals.append((f"HTTP KV read, cofferd / nginx serving the same body (same wrk): ≥ {g['http_over_nginx']}",
                      f"{ratio:.2f}", ratio >= g["http_over_nginx"]))
    else:
        goals.append((f"HTTP KV read, cofferd / nginx serving the same body: ≥ {g['http_over_nginx']}", "not measured in this run", None))
    if web and "openbao" in web:
        c, b = web["coffer"], web["openbao"]
        ratio = c["requests_per_s"] / b["requests_per_s"]
        goals.append((f"HTTP KV read, cofferd / OpenBao requests/s ≥ {g['http_over_openbao']}×", f"{ratio:.2f}×",
                      ratio >= g["http_over_openbao"]))
        goals.append(("HTTP KV read p99 ≤ 1/5 of OpenBao's", f"{c['p99_us'] / b['p99_us']:.2f}×", c["p99_us"] * 5 <= b["p99_us"]))
    else:
        goals.append((f"HTTP KV read, cofferd / OpenBao requests/s ≥ {g['http_over_openbao']}×", "not measured in this run", None))
    alone = f.get(KV_READ_ALONE)
    for name, goal in ((KV_READ_WRITER, "KV read p99 with one concurrent writer ≤ 2× the p99 alone (same run)"),
                       (KV_READ_WRITER_PINNED, "  the same with the reader and the writer each on a CPU of its own")):
        contended = f.get(name)
        if alone and contended:
            ratio = contended["p99_us"] / alone["p99_us"]
            goals.append((goal, f"{ratio:.2f}× ({contended['p99_us']:.1f} µs against {alone['p99_us']:.1f} µs; "
                                f"the writer made {contended['writer_writes_per_s']:,.0f} writes/s)", ratio <= 2))
    hsm_result = results.get("hsm")
    if hsm_result:
        p50 = hsm_result["summary"]["p50_ms"]
        goals.append(("open + unseal via SoftHSM ≤ 20 ms (p50)", f"{p50:.1f} ms", p50 <= 20))
    goals += database_goals(results.get("database"), database_thresholds()["goals"])
    goals += pki_goals(results.get("pki"), pki_thresholds()["goals"])
    goals += auth_goals(results.get("auth"), auth_thresholds()["goals"])
    goals += events_goals(results.get("events"))
    transit = f.get("c: transit encrypt 64 B (fast path)")
    transit_floor = f.get("c floor: aes-256-gcm seal 64 B (EVP, random nonce)")
    if transit and transit_floor:
        share = transit_floor["p50_us"] / transit["p50_us"]  # throughput share at the median
        goals.append(("transit 64-byte encrypt via the C fast path ≥ 30% of raw OpenSSL", f"{share * 100:.0f}%", share >= 0.30))
    else:
        goals.append(("transit 64-byte encrypt via the C fast path ≥ 30% of raw OpenSSL", "not measured in this run", None))
    return goals


def database_thresholds():
    return read_json(os.path.join(ROOT, "bench", "thresholds.json"))["database"]


def database_goals(db, g):
    """Issue 15's goals (limits from bench/thresholds.json's database.goals)."""
    if not db:
        return [("database creds p50 ≤ 1.2× the floor; lease expiry", "not measured in this run", None)]
    goals = []
    f = figures_by_name(db)
    floor, coffer = f.get(CREDS_FLOOR), f.get(CREDS_HANDLE)
    if floor and coffer:
        ratio = coffer["p50_us"] / floor["p50_us"]
        goals.append((f"database/creds p50 ≤ {g['creds_p50_over_floor']}× the floor (CREATE ROLE + GRANT in one query, kept libpq connection, durable PostgreSQL)",
                      f"{ratio:.2f}× ({coffer['p50_us'] / 1000:.2f} ms against {floor['p50_us'] / 1000:.2f} ms; median of the rounds' ratios "
                      f"{db['summary'].get('creds_handle_sqlite_p50_over_floor_median_round', 0):.2f}×)",
                      ratio <= g["creds_p50_over_floor"]))
    web = db.get("http")
    if web:
        c, b = web["coffer"], web["openbao"]
        goals.append((f"database/creds over HTTP: p99 ≤ {g['http_creds_p99_over_openbao']}× OpenBao's",
                      f"{c['p99_us'] / b['p99_us']:.2f}× ({c['p99_us'] / 1000:.2f} ms against {b['p99_us'] / 1000:.2f} ms)",
                      c["p99_us"] <= g["http_creds_p99_over_openbao"] * b["p99_us"]))
    slo = g["slo_dynamic_secret_ms"] * 1000
    if coffer:
        worst = max([coffer["p99_us"]] + ([web["coffer"]["p99_us"]] if web else []))
        goals.append((f"dynamic secret generation < {g['slo_dynamic_secret_ms']} ms (p99, in-process{' and HTTP' if web else ''})",
                      f"{worst / 1000:.2f} ms", worst < slo))
    expiry = db["summary"].get("expiry")
    if expiry:
        goals.append((f"open + unseal with {expiry['leases']:,} leases ≤ {g['open_unseal_with_leases_over_without']}× with none (medians)",
                      f"{expiry['open_unseal_ratio']:.2f}× ({expiry['open_unseal_with_leases_ms']:.2f} ms against "
                      f"{expiry['open_unseal_without_ms']:.2f} ms)",
                      expiry["open_unseal_ratio"] <= g["open_unseal_with_leases_over_without"]))
        goals.append((f"revocation on expiry ≥ the database's DROP ROLE rate / {g['expiry_floor_rate_over_coffer']} ({expiry['leases']:,} users)",
                      f"{expiry['revoke_rate_per_s']:,.0f}/s against {expiry['floor_drop_rate_per_s']:,.0f}/s: the floor is "
                      f"{expiry['floor_over_coffer_rate']:.2f}× faster",
                      expiry["floor_over_coffer_rate"] <= g["expiry_floor_rate_over_coffer"]))
    return goals


def database_table(db):
    """Issue 15's figures: creds in-process and over HTTP, and lease expiry at scale."""
    if not db:
        return []
    f = figures_by_name(db)
    floor = f.get(CREDS_FLOOR)
    lines = ["", f"### Dynamic PostgreSQL credentials (issue 15; {f[CREDS_HANDLE]['n']:,} each, alternating rounds, "
                 "one thread; the users each round made dropped after it)" if CREDS_HANDLE in f else "", "",
             "| operation | p50 ms | p90 ms | p99 ms | max ms | CPU ms/op (process) | p50 / floor |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in f.items():
        ratio = f"{r['p50_us'] / floor['p50_us']:.2f}×" if floor else ""
        lines.append(f"| {name} | {r['p50_us'] / 1000:.2f} | {r['p90_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | "
                     f"{r['max_us'] / 1000:.2f} | {r.get('cpu_us_per_op', 0) / 1000:.2f} | {ratio} |")
    web = db.get("http")
    if web:
        for name in ("coffer", "openbao"):
            r = web[name]
            label = "cofferd -dev" if name == "coffer" else "bao server -dev (OpenBao)"
            lines.append(f"| creds over HTTP, {label}, {web['rounds']} alternating rounds of {web['per_round']} | "
                         f"{r['p50_us'] / 1000:.2f} | {r['p90_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['max_us'] / 1000:.2f} | | |")
        lines += ["", f"HTTP p99 cofferd / OpenBao: {web['coffer']['p99_us'] / web['openbao']['p99_us']:.2f}×; "
                      f"p50: {web['coffer']['p50_us'] / web['openbao']['p50_us']:.2f}×."]
    expiry = db["summary"].get("expiry")
    if expiry:
        lines += ["", f"### Lease expiry at scale ({expiry['leases']:,} leases of real PostgreSQL users, SQLite vault)", "",
                  "| figure | value |", "| --- | ---: |",
                  f"| issuing the leases through creds (build only) | {expiry['issue_seconds']:.0f} s ({expiry['issue_rate_per_s']:,.0f}/s) |",
                  f"| open + unseal with {expiry['leases']:,} leases (median) | {expiry['open_unseal_with_leases_ms']:.2f} ms |",
                  f"| open + unseal with none (median) | {expiry['open_unseal_without_ms']:.2f} ms |",
                  f"| ratio | {expiry['open_unseal_ratio']:.2f}× |",
                  f"| revocation on expiry (expireLeases, {expiry['chunks']} chunks) | {expiry['revoke_rate_per_s']:,.0f} leases/s "
                  f"({expiry['revoke_seconds']:.1f} s) |",
                  f"| floor: DROP ROLE over one kept connection | {expiry['floor_drop_rate_per_s']:,.0f} roles/s ({expiry['floor_seconds']:.1f} s) |",
                  f"| reference: DROP ROLE sent as the engine sends it (BEGIN, DROP, COMMIT) | "
                  f"{expiry.get('transaction_drop_rate_per_s', 0):,.0f} roles/s |",
                  f"| floor rate / Coffer rate (target ≤ 1.5) | {expiry['floor_over_coffer_rate']:.2f}× "
                  f"(median of the chunks: {expiry['floor_over_coffer_rate_median_round']:.2f}×) |"]
    return lines


def concurrent_write_table(f):
    """The KV read alone and with one concurrent writer (alternating rounds), and what the writer did."""
    alone = f.get(KV_READ_ALONE)
    rows = [(label, f[name]) for label, name in (("with one concurrent writer", KV_READ_WRITER),
                                                 ("the same, reader and writer each on a CPU of its own", KV_READ_WRITER_PINNED))
            if name in f]
    if not (alone and rows):
        return []
    lines = ["", f"### KV read with one concurrent writer ({alone['n']:,} reads each on one thread, spaced by a {alone.get('pause_us', 0):.0f} µs sleep, in "
                 f"{len(alone['round_p99_us'])} alternating rounds; the writer writes other secrets of the mount, an fsync each)", "",
             "| reads | p50 µs | p99 µs | max µs | p99 / p99 alone | reader blocked (voluntary switches) | "
             "reader preempted (involuntary) | writer: writes/s | write p50 / p99 ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in [("alone", alone)] + rows:
        writer = "" if r is alone else f"{r['writer_writes_per_s']:,.0f} ({r['writer_writes']:,} writes)"
        write_latency = "" if r is alone else f"{r['writer_write_p50_us'] / 1000:.2f} / {r['writer_write_p99_us'] / 1000:.2f}"
        lines.append(f"| {label} | {r['p50_us']:.2f} | {r['p99_us']:.2f} | {r['max_us']:.1f} | {r['p99_us'] / alone['p99_us']:.2f}× | "
                     f"{r['voluntary_switches']:,} | {r['involuntary_switches']:,} | {writer} | {write_latency} |")
    if "slowest_1pct_blocked" in alone:
        lines += ["", "The slowest 1% of the reads: how many blocked (a voluntary switch), were preempted (an involuntary one "
                      "only) or stayed on the CPU.", "", "| reads | from µs | blocked | preempted | on the CPU |", "| --- | ---: | ---: | ---: | ---: |"]
        for label, r in [("alone", alone)] + rows:
            lines.append(f"| {label} | {r['slowest_1pct_from_us']:.0f} | {r['slowest_1pct_blocked']} | {r['slowest_1pct_preempted']} | "
                         f"{r['slowest_1pct_on_cpu']} |")
    return lines


def audited_http_table(audit):
    if not audit:
        return []
    lines = ["", "### A file audit device over HTTP (KV read; server CPU per request, all its threads; median of "
                 "alternating rounds with and without the device)", "",
             "| system | CPU µs/read, no device | with a file device | ratio | audit's µs/read | requests/s without → with |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in audit.items():
        plain, audited = r["kv_read"], r["kv_read_audited"]
        a, b = plain["server_cpu_us_per_request"], audited["server_cpu_us_per_request"]
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f}× | {b - a:.1f} | "
                     f"{plain['requests_per_s']:,.0f} → {audited['requests_per_s']:,.0f} |")
    return lines


def markdown(results):
    lines = []
    f = figures_by_name(results.get("inprocess"), results.get("c"), results.get("hsm"))
    floor = None
    if FLOOR_SQLITE in f and FLOOR_AES in f:
        floor = f[FLOOR_SQLITE]["p50_us"] + f[FLOOR_AES]["p50_us"]
    lines += ["### In-process (one thread)", "",
              "| operation | p50 µs | p90 µs | p99 µs | max µs | ops/s | allocs/op | p50 / floor |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in f.items():
        allocs = f"{r['allocs_per_op']:.1f}" if "allocs_per_op" in r else "n/a"
        # The spaced reads next to a writer are not compared with the floor, measured back to back.
        spaced = name in (KV_READ_ALONE, KV_READ_WRITER, KV_READ_WRITER_PINNED)
        ratio = f"{r['p50_us'] / floor:.1f}×" if floor and not spaced and not name.startswith(("floor", "c floor")) and ("kv read" in name or "kv_get" in name or "GET" in name) else ""
        lines.append(f"| {name} | {r['p50_us']:.2f} | {r['p90_us']:.2f} | {r['p99_us']:.2f} | {r['max_us']:.1f} | "
                     f"{r['ops_per_s']:,.0f} | {allocs} | {ratio} |")
    if floor:
        lines += ["", f"Floor of one KV read = raw SQLite point read + raw AES-256-GCM open of the same row: {floor:.2f} µs p50."]
    lines += concurrent_write_table(f)
    if results.get("scale"):
        lines += ["", "### Scale (KV read of a random key, one thread; each size in its own process)", "",
                  "| secrets | DB MiB | open + unseal (first / median of 5) ms | read p50 / p99 µs, file in page cache | "
                  "read p50 / p99 µs, page cache as found | RSS after open MiB | RSS after reads MiB |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for s in results["scale"]:
            m = s["summary"]
            lines.append(f"| {m['secrets']:,} | {m['database_mib']:.0f} | {m['open_unseal_first_ms']:.1f} / {m['open_unseal_median_ms']:.1f} | "
                         f"{m['random_read_p50_us']:.1f} / {m['random_read_p99_us']:.1f} | "
                         f"{m['random_read_as_found_p50_us']:.1f} / {m['random_read_as_found_p99_us']:.1f} | "
                         f"{m['rss_after_open_mib']:.0f} | {m['rss_after_reads_mib']:.0f} |")
    if results.get("namespaces"):
        lines += ["", "### Namespaces (open + unseal, each namespace with a KV v2 mount; each size in its own process)", "",
                  "| namespaces | open + unseal median ms | RSS after open MiB | read in one of them p50 / p99 µs |",
                  "| ---: | ---: | ---: | ---: |"]
        for s in results["namespaces"]:
            m = s["summary"]
            lines.append(f"| {m['namespaces']:,} | {m['open_unseal_median_ms']:.1f} | {m['rss_after_open_mib']:.0f} | "
                         f"{m['read_p50_us']:.1f} / {m['read_p99_us']:.1f} |")
    web = results.get("http")
    if web:
        lines += ["", f"### HTTP (wrk, 1 thread, {web['connections']} connections, {web['rounds']} alternating rounds of "
                      f"{web['seconds_per_round']} s; median round; dev servers in memory, sharing the 2 cores with wrk)", "",
                  "| workload | system | requests/s | p50 ms | p90 ms | p99 ms | max ms | server CPU µs/req | Coffer / OpenBao (req/s) |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for workload, systems in web["workloads"].items():
            for name, r in systems.items():
                ratio = ""
                if name == "coffer" and "openbao" in systems:
                    ratio = f"{r['requests_per_s'] / systems['openbao']['requests_per_s']:.2f}×"
                cpu = f"{r['server_cpu_us_per_request']:.1f}" if "server_cpu_us_per_request" in r else ""
                lines.append(f"| {workload} | {name} | {r['requests_per_s']:,.0f} | {r['p50_us'] / 1000:.2f} | {r['p90_us'] / 1000:.2f} | "
                             f"{r['p99_us'] / 1000:.2f} | {r['max_us'] / 1000:.2f} | {cpu} | {ratio} |")
        if "nginx_static" in web:
            r = web["nginx_static"]
            lines.append(f"| static JSON, {web['kv_read_body_bytes']} B (HTTP floor) | nginx | {r['requests_per_s']:,.0f} | "
                         f"{r['p50_us'] / 1000:.2f} | {r['p90_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['max_us'] / 1000:.2f} | |")
    lines += audited_http_table((web or {}).get("audited_kv_read"))
    lines += database_table(results.get("database"))
    lines += pki_table(results.get("pki"))
    lines += auth_table(results.get("auth"))
    lines += ["", "### Goals", "", "| goal | measured | met |", "| --- | --- | --- |"]
    for goal, measured, met in evaluate_goals(results):
        lines.append(f"| {goal} | {measured} | {'yes' if met else ('no' if met is False else 'pending')} |")
    return "\n".join(lines)


# ---- Auth: logins over HTTP, cofferd against OpenBao (issue 17) --------------------------------------

AUTH_LUA = r"""
-- Generated by bench/bench.py (auth part): one login request, the same for every call.
local path = os.getenv("AUTH_PATH")
local body = os.getenv("AUTH_BODY")
local headers = { ["Content-Type"] = "application/json" }
request = function()
  return wrk.format("POST", path, headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""
AUTH_PASSWORD = "bench-password-0123456789"
# OpenBao's userpass hashes with golang.org/x/crypto/bcrypt at bcrypt.DefaultCost.
OPENBAO_KDF = "bcrypt, cost 10 (golang.org/x/crypto/bcrypt DefaultCost; openbao builtin/credential/userpass)"


def _b64url(data):
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _der_ecdsa_to_jws(der):
    """An ECDSA-Sig-Value (SEQUENCE of two INTEGERs, as `openssl dgst -sign` writes it) as JWS r||s (P-256)."""
    def integer(i):
        assert der[i] == 0x02
        n = der[i + 1]
        return int.from_bytes(der[i + 2:i + 2 + n], "big"), i + 2 + n
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    r, i = integer(i)
    s, _ = integer(i)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def es256_jwt(scratch, claims):
    """An ES256 JWT and the public key's PEM, with the openssl CLI only (this script is standard library only)."""
    key = os.path.join(scratch, "jwt-es256.pem")
    if not os.path.exists(key):
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key], check=True,
                       capture_output=True)
    public = subprocess.run(["openssl", "ec", "-in", key, "-pubout"], check=True, capture_output=True, text=True).stdout
    signing_input = (_b64url(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "bench"}).encode()) + "." +
                     _b64url(json.dumps(claims).encode()))
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input.encode(), check=True,
                         capture_output=True).stdout
    return signing_input + "." + _b64url(_der_ecdsa_to_jws(der)), public


class AuthSetupError(Exception):
    pass


def auth_setup(name, port, scratch):
    """The same mounts, roles and user on each server. Returns ({workload: (path, body)}, {workload: why it
    cannot run}): a method the server lacks (or answers wrongly) leaves its workloads out, said why."""
    def call(method, path, body=None):
        try:
            return api(port, method, path, "root", body)
        except urllib.error.HTTPError as e:
            raise AuthSetupError(f"{method} {path} answered {e.code}: {e.read()[:200].decode(errors='replace').strip()}")

    def approle():
        call("POST", "sys/auth/approle", {"type": "approle"})
        out = {}
        for workload, role, extra in (("approle_login", "bench", {}), ("approle_login_batch", "bench-batch", {"token_type": "batch"})):
            call("POST", f"auth/approle/role/{role}", {"token_policies": ["bench"], "token_ttl": "10m", **extra})
            role_id = call("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
            secret_id = call("POST", f"auth/approle/role/{role}/secret-id")["data"]["secret_id"]
            out[workload] = ("/v1/auth/approle/login", {"role_id": role_id, "secret_id": secret_id})
        return out

    def jwt():
        now = int(time.time())
        token, public = es256_jwt(scratch, {"iss": "https://issuer.bench", "aud": "coffer", "sub": "svc-bench",
                                            "iat": now, "nbf": now, "exp": now + 3600})
        call("POST", "sys/auth/jwt", {"type": "jwt"})
        call("POST", "auth/jwt/config", {"jwt_validation_pubkeys": [public], "bound_issuer": "https://issuer.bench"})
        call("POST", "auth/jwt/role/bench", {"role_type": "jwt", "bound_audiences": ["coffer"], "user_claim": "sub",
                                             "token_policies": ["bench"], "token_ttl": "10m"})
        return {"jwt_login_es256": ("/v1/auth/jwt/login", {"role": "bench", "jwt": token})}

    def userpass():
        call("POST", "sys/auth/userpass", {"type": "userpass"})
        call("POST", "auth/userpass/users/bench", {"password": AUTH_PASSWORD, "token_policies": ["bench"], "token_ttl": "10m"})
        return {"userpass_login": ("/v1/auth/userpass/login/bench", {"password": AUTH_PASSWORD})}

    api(port, "PUT", "sys/policies/acl/bench", "root", {"policy": 'path "secret/data/bench/*" { capabilities = ["read"] }'})
    workloads, unavailable = {}, {}
    for method, names in ((approle, ("approle_login", "approle_login_batch")), (jwt, ("jwt_login_es256",)),
                          (userpass, ("userpass_login",))):
        try:
            workloads.update(method())
        except AuthSetupError as e:
            unavailable.update({n: str(e) for n in names})
    # Each works once before it is timed (and a login answer carries a token).
    for workload, (path, body) in list(workloads.items()):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
            if not (answer.get("auth") or {}).get("client_token"):
                raise AuthSetupError(f"POST {path} answered no token: {json.dumps(answer)[:200]}")
        except urllib.error.HTTPError as e:
            unavailable[workload] = f"POST {path} answered {e.code}: {e.read()[:200].decode(errors='replace').strip()}"
            del workloads[workload]
        except AuthSetupError as e:
            unavailable[workload] = str(e)
            del workloads[workload]
    for workload, why in unavailable.items():
        progress(f"auth: {name} cannot run {workload}: {why}")
    return workloads, unavailable


def auth_wrk(port, path, body, seconds, connections, script):
    return run_wrk(port, script, {"AUTH_PATH": path, "AUTH_BODY": json.dumps(body)}, seconds, connections, path)


def coffer_kdf():
    """Coffer's userpass KDF and parameters, as docs/auth.md states them (the line naming scrypt or Argon2)."""
    path = os.path.join(ROOT, "docs", "auth.md")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                lowered = line.lower()
                if ("scrypt" in lowered or "argon2" in lowered) and any(c.isdigit() for c in line):
                    return line.strip()
    return "not stated (docs/auth.md has no line naming scrypt or Argon2 with its parameters)"


def auth_inprocess(scratch, iterations, rounds):
    """`coffer-bench auth` (bench/InProcess/Auth.swift): JWT (ES256, static key) and AppRole logins through
    Core.handle on a memory vault, in alternating rounds with the floor of one ES256 verify by OpenSSL."""
    binary = os.path.join(RELEASE, "coffer-bench")
    if not os.path.exists(binary):
        return {"pending": f"{os.path.relpath(binary, ROOT)} is not built"}
    out = os.path.join(scratch, "auth-inprocess.json")
    try:
        run_tool([binary, "auth", "--iterations", str(iterations), "--rounds", str(rounds), "--json", out], env=preload_env())
    except SystemExit as e:  # a coffer-bench built before bench/InProcess/Auth.swift: the HTTP figures still count
        return {"pending": str(e).splitlines()[-1][:200]}
    return read_json(out)


def auth(cofferd, scratch, seconds, rounds, connections, userpass_seconds, userpass_connections, batch=True,
         inprocess_iterations=0, inprocess_rounds=0):
    """AppRole and ES256 JWT (static public key) logins, and userpass logins, over HTTP: cofferd -dev and
    bao server -dev started side by side, the same wrk client and settings, alternating rounds (median
    round reported). Every login creates a token (and, on first use, an entity)."""
    in_process = auth_inprocess(scratch, inprocess_iterations, inprocess_rounds) if inprocess_iterations else None
    bao = os.environ.get("COFFER_BAO") or os.path.join(ROOT, ".venv", "bin", "bao")
    script = os.path.join(scratch, "auth.lua")
    with open(script, "w") as f:
        f.write(AUTH_LUA)
    servers = []
    try:
        progress(f"auth: starting {os.path.relpath(cofferd, ROOT)} -dev and bao server -dev on loopback")
        systems = {}
        port = free_port()
        servers.append(Server("cofferd", [cofferd, "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
                                          "-log-level=error"], port, os.path.join(scratch, "cofferd-auth.log")))
        systems["coffer"] = port
        port = free_port()
        servers.append(Server("bao", [bao, "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
                                      "-log-level=error"], port, os.path.join(scratch, "bao-auth.log"),
                              env={**os.environ, "HOME": scratch}))
        systems["openbao"] = port
        workloads, unavailable = {}, {}
        for name, port in systems.items():
            workloads[name], missing = auth_setup(name, port, scratch)
            for workload, why in missing.items():
                unavailable.setdefault(workload, {})[name] = why
        plan = [("approle_login", seconds, connections), ("jwt_login_es256", seconds, connections)]
        if batch:
            plan.append(("approle_login_batch", seconds, connections))
        plan.append(("userpass_login", userpass_seconds, userpass_connections))
        results = {}
        for workload, secs, conns in plan:
            if workload in unavailable:
                continue
            collected = {name: [] for name in systems}
            for r in range(rounds):
                for name, port in (systems.items() if r % 2 == 0 else reversed(list(systems.items()))):
                    progress(f"auth {workload}: {name} round {r + 1}/{rounds} ({secs} s, {conns} connections)")
                    path, body = workloads[name][workload]
                    collected[name].append(auth_wrk(port, path, body, secs, conns, script))
            results[workload] = {name: median_round(rs) for name, rs in collected.items()}
            results[workload]["connections"] = conns
            results[workload]["seconds_per_round"] = secs
    finally:
        for server in servers:
            server.stop()
    return {"rounds": rounds, "client": "wrk, 1 thread", "workloads": results, "unavailable": unavailable,
            "kdf": {"coffer": coffer_kdf(), "openbao": OPENBAO_KDF}, "inprocess": in_process}


AUTH_VERIFY_FLOOR = "floor: one ES256 verify (OpenSSL EVP_DigestVerify, P-256)"
AUTH_JWT_BATCH = "jwt login ES256 (Swift API, handle; batch token, memory)"
AUTH_WORKLOADS = {"approle_login": "AppRole login (service token)", "approle_login_batch": "AppRole login (batch token)",
                  "jwt_login_es256": "JWT login, ES256, static public key", "userpass_login": "userpass login (KDF by design)"}


def auth_table(a):
    if not a:
        return []
    lines = ["", f"### Auth: logins over HTTP (wrk, 1 thread, {a['rounds']} alternating rounds; median round; dev servers "
                 "in memory, sharing the cores with wrk)", "",
             "| login | system | connections | logins/s | p50 ms | p90 ms | p99 ms | max ms | Coffer / OpenBao (logins/s) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for workload, systems in a["workloads"].items():
        for name in ("coffer", "openbao"):
            r = systems[name]
            ratio = f"{r['requests_per_s'] / systems['openbao']['requests_per_s']:.2f}×" if name == "coffer" else ""
            lines.append(f"| {AUTH_WORKLOADS.get(workload, workload)} | {name} | {systems['connections']} | "
                         f"{r['requests_per_s']:,.0f} | {r['p50_us'] / 1000:.2f} | {r['p90_us'] / 1000:.2f} | "
                         f"{r['p99_us'] / 1000:.2f} | {r['max_us'] / 1000:.2f} | {ratio} |")
    for workload, systems in a.get("unavailable", {}).items():
        for name, why in systems.items():
            lines.append(f"| {AUTH_WORKLOADS.get(workload, workload)} | {name} | | not measured: {why} | | | | | |")
    lines += ["", f"userpass KDF: Coffer {a['kdf']['coffer']}; OpenBao {a['kdf']['openbao']}."]
    inproc = a.get("inprocess")
    if inproc and inproc.get("results"):
        f = figures_by_name(inproc)
        floor = f.get(AUTH_VERIFY_FLOOR)
        lines += ["", "In process (coffer-bench auth: Core.handle on a memory vault, one thread, alternating rounds with the floor):", "",
                  "| operation | p50 µs | p90 µs | p99 µs | max µs | ops/s | p50 / one ES256 verify |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, r in f.items():
            ratio = f"{r['p50_us'] / floor['p50_us']:.2f}×" if floor and name != AUTH_VERIFY_FLOOR else ""
            lines.append(f"| {name} | {r['p50_us']:.1f} | {r['p90_us']:.1f} | {r['p99_us']:.1f} | {r['max_us']:.1f} | "
                         f"{r['ops_per_s']:,.0f} | {ratio} |")
    elif inproc:
        lines += ["", f"In process: not measured ({inproc.get('pending', 'no figures')})."]
    return lines


def auth_thresholds():
    return read_json(os.path.join(ROOT, "bench", "thresholds.json"))["auth"]


def events(cofferd, scratch, iterations):
    """`coffer-bench events` (bench/InProcess/Events.swift) and, with a cofferd, bench/events_ws.py."""
    out = os.path.join(scratch, "events.json")
    run_tool([os.path.join(RELEASE, "coffer-bench"), "events", "--iterations", str(iterations), "--json", out])
    result = {"inprocess": read_json(out)}
    if cofferd:
        ws_out = os.path.join(scratch, "events-ws.json")
        run_tool([os.path.join(ROOT, ".venv", "bin", "python"), os.path.join(ROOT, "bench", "events_ws.py"),
                  "--cofferd", cofferd, "--iterations", str(max(500, iterations // 2)), "--json", ws_out])
        result["websocket"] = read_json(ws_out)
    return result


def events_goals(e):
    """Issue 20's event goals (bench/thresholds.json's events.goals)."""
    g = read_json(os.path.join(ROOT, "bench", "thresholds.json"))["events"]["goals"]
    if not e:
        return [(f"event from a KV write to a subscriber callback in process: p99 ≤ {g['callback_p99_ms']} ms",
                 "not measured in this run", None)]
    summary = e["inprocess"]["summary"]
    goals = [(f"event from a KV write to a subscriber callback in process: p99 ≤ {g['callback_p99_ms']} ms",
              f"{summary['event_callback_p99_us'] / 1000:.3f} ms", summary["event_callback_p99_us"] <= g["callback_p99_ms"] * 1000),
             (f"KV write p50 with 1,000 subscribers ≤ {g['write_1000_subscribers_ratio']}× with none (same run)",
              f"{summary['write_1000_subscribers_p50_ratio']:.2f}× (p99 {summary['write_1000_subscribers_p99_ratio']:.2f}×)",
              summary["write_1000_subscribers_p50_ratio"] <= g["write_1000_subscribers_ratio"])]
    ws = e.get("websocket")
    if ws:
        goals.append((f"event over WebSocket from the write's response to the frame: p99 ≤ {g['websocket_p99_ms']} ms",
                      f"{ws['after_response_p99_us'] / 1000:.2f} ms (write + frame p99 {ws['p99_us'] / 1000:.2f} ms)",
                      ws["after_response_p99_us"] <= g["websocket_p99_ms"] * 1000))
    else:
        goals.append((f"event over WebSocket: p99 ≤ {g['websocket_p99_ms']} ms", "not measured in this run", None))
    return goals


def auth_goals(a, g):
    if not a:
        return [("Auth: AppRole and JWT logins over HTTP against OpenBao", "not measured in this run", None)]
    goals = []
    f = figures_by_name(a.get("inprocess"))
    label = f"JWT (ES256) login in process p50 ≤ {g['inprocess_jwt_login_p50_over_verify']}× one ES256 verify by OpenSSL"
    if AUTH_VERIFY_FLOOR in f and AUTH_JWT_BATCH in f:
        ratio = f[AUTH_JWT_BATCH]["p50_us"] / f[AUTH_VERIFY_FLOOR]["p50_us"]
        goals.append((label, f"{ratio:.2f}× ({f[AUTH_JWT_BATCH]['p50_us']:.1f} µs against {f[AUTH_VERIFY_FLOOR]['p50_us']:.1f} µs; "
                             "batch token)", ratio <= g["inprocess_jwt_login_p50_over_verify"]))
    else:
        goals.append((label, "not measured in this run", None))
    for workload, label in (("approle_login", "AppRole login"), ("jwt_login_es256", "JWT (ES256) login")):
        w = a["workloads"].get(workload)
        if not w:
            goals.append((f"{label} over HTTP ≥ {g['login_rate_over_openbao']}× OpenBao's logins/s",
                          f"not measured: {a.get('unavailable', {}).get(workload) or 'not in this run'}", None))
        else:
            ratio = w["coffer"]["requests_per_s"] / w["openbao"]["requests_per_s"]
            goals.append((f"{label} over HTTP ≥ {g['login_rate_over_openbao']}× OpenBao's logins/s", f"{ratio:.2f}× "
                          f"({w['coffer']['requests_per_s']:,.0f}/s against {w['openbao']['requests_per_s']:,.0f}/s)",
                          ratio >= g["login_rate_over_openbao"]))
    return goals


def check_auth(a, limits):
    """The auth smoke gate: loose margins (a debug cofferd against OpenBao's release build)."""
    if not a:
        return ["auth: not measured"]
    failures = []
    for workload in ("approle_login", "jwt_login_es256"):
        w = a["workloads"].get(workload)
        if not w:
            failures.append(f"auth {workload}: not measured ({a.get('unavailable', {}).get(workload)})")
            continue
        ratio = w["coffer"]["requests_per_s"] / w["openbao"]["requests_per_s"]
        if ratio < limits["min_login_rate_over_openbao"]:
            failures.append(f"auth {workload}: Coffer {ratio:.2f}× OpenBao's logins/s, under the limit of "
                            f"{limits['min_login_rate_over_openbao']}×")
        if w["coffer"]["p99_us"] > limits["login_p99_ms"] * 1000:
            failures.append(f"auth {workload}: Coffer p99 {w['coffer']['p99_us'] / 1000:.1f} ms, over {limits['login_p99_ms']} ms")
    return failures


# ---- The CI gate -----------------------------------------------------------------------------------

def check_thresholds(results, thresholds):
    """Failures (strings) of the smoke gate: the SLO, then each in-process figure against its limit."""
    failures = []
    slo_us = thresholds["slo_p99_ms"] * 1000
    f = figures_by_name(results.get("inprocess"), results.get("c"))
    for name in (thresholds["slo_figures"] if results.get("inprocess") else []):
        if name not in f:
            failures.append(f"{name}: not measured")
        elif f[name]["p99_us"] > slo_us:
            failures.append(f"{name}: p99 {f[name]['p99_us'] / 1000:.2f} ms breaks the {thresholds['slo_p99_ms']} ms SLO")
    web = (results.get("http") or {}).get("workloads", {}).get("kv_read", {}).get("coffer")
    if web:
        p99s = sorted(web.get("rounds_p99_us") or [web["p99_us"]])
        median_p99 = p99s[len(p99s) // 2]
        if median_p99 > slo_us:
            rounds = ", ".join(f"{p / 1000:.2f}" for p in web.get("rounds_p99_us") or [web["p99_us"]])
            failures.append(f"HTTP KV read: median p99 of the rounds {median_p99 / 1000:.2f} ms breaks the "
                            f"{thresholds['slo_p99_ms']} ms SLO (rounds: {rounds} ms)")
    floor = f[FLOOR_SQLITE]["p50_us"] + f[FLOOR_AES]["p50_us"] if FLOOR_SQLITE in f and FLOOR_AES in f else None
    if results.get("inprocess") and not floor:
        failures.append("the floor of a KV read: not measured")
    for name, limit in thresholds["max_p50_over_floor"].items():
        if floor and name in f and f[name]["p50_us"] / floor > limit:
            failures.append(f"{name}: p50 is {f[name]['p50_us'] / floor:.1f}× the floor ({floor:.2f} µs), over the limit of {limit}×")
    for name, rule in thresholds["max_p99_over_reference"].items():
        reference = rule["reference"]
        if name not in f or reference not in f:
            if not rule.get("optional") and results.get("inprocess"):
                failures.append(f"{name}: not measured (with {reference} in the same run)")
            continue
        ratio = f[name]["p99_us"] / f[reference]["p99_us"]
        if ratio > rule["limit"]:
            failures.append(f"{name}: p99 {f[name]['p99_us']:.1f} µs is {ratio:.2f}× the p99 of {reference} "
                            f"({f[reference]['p99_us']:.1f} µs), over the limit of {rule['limit']}×")
        writes = f[name].get("writer_writes", 0)
        if writes < rule.get("min_writer_writes", 0):
            failures.append(f"{name}: the writer completed {writes} writes during the reads, fewer than the "
                            f"{rule['min_writer_writes']} that make the figure mean something")
    if "database" in results or results.get("inprocess"):  # the gate runs both; --parts may pick one
        failures += check_database(results.get("database"), thresholds["database"]["smoke"])
    if "pki" in results.get("parts", []):
        failures += check_pki(results.get("pki"), thresholds["pki"]["smoke"])
    if "auth" in results.get("parts", []):
        failures += check_auth(results.get("auth"), thresholds["auth"]["smoke"])
    failures += check_read_path(results.get("inprocess"), f, thresholds["read_path"]["smoke"])
    for name, limit in thresholds["max_allocs_per_op"].items():
        if name in f and f[name].get("allocs_per_op", 0) > limit:
            failures.append(f"{name}: {f[name]['allocs_per_op']:.1f} allocations per operation, over the limit of {limit}")
    return failures


def check_read_path(inprocess, f, limits):
    """Issue 21's smoke gate: reads from two threads are not slower than from one (with 2 CPUs or more), and an
    audited read's CPU stays within its margin."""
    if not inprocess:
        return []
    failures = []
    summary = inprocess.get("summary", {})
    if (os.cpu_count() or 1) >= 2:
        ratio = summary.get("read_scaling_ratio")
        if ratio is None:
            failures.append("kv read scaling (2 threads / 1): not measured")
        elif ratio < limits["min_read_scaling_ratio"]:
            rounds = ", ".join(f"{r:.2f}" for r in summary.get("read_scaling_round_ratios", []))
            failures.append(f"kv read scaling: 2 threads made {ratio:.2f}× the reads of 1 (median; rounds {rounds}), "
                            f"under the limit of {limits['min_read_scaling_ratio']}×")
    reference, audited = f.get("kv read (audit reference: no device)"), f.get("kv read + file audit")
    if reference and audited:
        ratio = audited["cpu_us_per_op"] / reference["cpu_us_per_op"]
        if ratio > limits["max_audited_read_cpu_ratio"]:
            failures.append(f"kv read + file audit: {ratio:.2f}× the CPU of an unaudited read (all threads), over the limit "
                            f"of {limits['max_audited_read_cpu_ratio']}×")
    return failures


def check_database(db, limits):
    """Issue 15's smoke gate: the creds SLO and, with margins, the ratios a noisy machine keeps stable."""
    if not db:
        return ["database: not measured"]
    failures = []
    f = figures_by_name(db)
    summary = db["summary"]
    slo = limits["slo_dynamic_secret_p99_ms"] * 1000
    for name in (CREDS_HANDLE, "creds (wire JSON, handleWire; SQLite)"):
        if name not in f:
            failures.append(f"{name}: not measured")
        elif f[name]["p99_us"] > slo:
            failures.append(f"{name}: p99 {f[name]['p99_us'] / 1000:.1f} ms breaks the {limits['slo_dynamic_secret_p99_ms']} ms SLO")
    ratio = summary.get("creds_handle_sqlite_p50_over_floor_median_round")
    if ratio is None or ratio > limits["creds_p50_over_floor_median_round"]:
        failures.append(f"{CREDS_HANDLE}: p50 over the floor's (median of the rounds) {ratio}, over the limit of "
                        f"{limits['creds_p50_over_floor_median_round']}×")
    expiry = summary.get("expiry")
    if not expiry:
        failures.append("lease expiry: not measured")
    else:
        if expiry["floor_over_coffer_rate_median_round"] > limits["expiry_floor_rate_over_coffer_median_round"]:
            failures.append(f"revocation on expiry: the DROP ROLE floor is {expiry['floor_over_coffer_rate_median_round']:.2f}× "
                            f"Coffer's rate (median of the chunks), over the limit of {limits['expiry_floor_rate_over_coffer_median_round']}×")
        if expiry["open_unseal_ratio"] > limits["open_unseal_with_leases_over_without"]:
            failures.append(f"open + unseal with {expiry['leases']} leases is {expiry['open_unseal_ratio']:.2f}× the time with none, "
                            f"over the limit of {limits['open_unseal_with_leases_over_without']}×")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the CI gate: short runs checked against bench/thresholds.json")
    parser.add_argument("--parts", default=None, help="comma-separated subset of inprocess,c,scale,namespaces,hsm,http,database,pki,auth,events")
    parser.add_argument("--out", default=None, help="results JSON (default: bench/results/<date>.json, or .build/bench for --smoke)")
    parser.add_argument("--cofferd", default=os.path.join(RELEASE, "cofferd"),
                        help="the cofferd binary (default: the release build; the smoke gate passes the debug one)")
    parser.add_argument("--leases", type=int, default=100_000, help="leases for the full run's expiry part (issue 15)")
    parser.add_argument("--revokes", type=int, default=10_000, help="certificates the full run's pki part revokes one by one")
    args = parser.parse_args()

    smoke = args.smoke
    default_parts = "inprocess,http,database,pki,auth" if smoke else "inprocess,c,scale,namespaces,hsm,http,database,pki,auth,events"
    parts = set((args.parts or default_parts).split(","))
    cofferd_built = os.path.exists(args.cofferd)
    scratch = tempfile.mkdtemp(prefix="coffer-bench-")
    results = {"kind": "smoke" if smoke else "full", "command": " ".join(sys.argv), "machine": machine(), "versions": versions(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "parts": sorted(parts)}
    try:
        if "inprocess" in parts:
            progress("in-process suite")
            results["inprocess"] = inprocess(5_000 if smoke else 100_000, scratch)
        if "c" in parts:
            progress("C ABI (libcoffer from the staged install)")
            results["c"] = c_abi(5_000 if smoke else 100_000, scratch)
        if "scale" in parts:
            progress("scale: 1k, 100k, 1M secrets (databases cached in .build/bench-data)")
            results["scale"] = scale([1_000, 100_000, 1_000_000], 20_000, scratch)
        if "namespaces" in parts:
            progress("namespaces: open + unseal with 0, 1,000 and 10,000 (databases cached in .build/bench-data)")
            results["namespaces"] = namespaces([0, 1_000, 10_000], scratch)
        if "hsm" in parts:
            progress("open + unseal through SoftHSM")
            results["hsm"] = hsm(50, scratch)
        if "http" in parts:
            if cofferd_built:
                results["cofferd"] = os.path.relpath(args.cofferd, ROOT)
                if smoke:
                    # Three short rounds, judged by their median p99: one round stalled by a neighbour on the
                    # shared machine does not decide the gate, two do.
                    results["http"] = http(args.cofferd, scratch, 2, 3, 16, ["kv_read"], include_bao=False, include_nginx=False)
                else:
                    workloads = ["kv_read", "kv_write", "token_lookup", "transit_encrypt", "transit_decrypt"]
                    results["http"] = http(args.cofferd, scratch, 5, 3, 16, workloads, audit_rounds=True)
            else:
                progress(f"http: skipped, {args.cofferd} is not built")
                results["http_pending"] = "cofferd not built"
        if "database" in parts:
            if smoke:
                # Creds in 4 rounds of 100 each; 500 leases in 5 chunks; no HTTP (no OpenBao in the gate).
                progress("database: creds and lease expiry against a real PostgreSQL (issue 15)")
                results["database"] = database(scratch, 400, 4, 500, 5, 5)
            else:
                progress(f"database: creds (in-process and over HTTP against OpenBao) and {args.leases:,} leases' expiry "
                         "against a real PostgreSQL (issue 15)")
                results["database"] = database(scratch, 2000, 10, args.leases, 10, 7,
                                               cofferd=args.cofferd if cofferd_built else None, http_rounds=10, http_per_round=100)
        if "pki" in parts:
            if smoke:
                # 500 EC issues per operation in 5 rounds, no RSA (a keygen takes ~0.3 s), 1,000 revocations
                # each followed by a CRL fetch; no HTTP (no OpenBao in the gate).
                progress("pki: EC issue against the OpenSSL floor, revoke + CRL")
                results["pki"] = pki(scratch, 500, 5, 0, 1000)
            else:
                progress(f"pki: EC and RSA issue against the OpenSSL floor (in-process) and OpenBao (HTTP), "
                         f"{args.revokes:,} revocations with a CRL fetch after each")
                results["pki"] = pki(scratch, 2000, 10, 150, args.revokes, cofferd=args.cofferd if cofferd_built else None,
                                     http_rounds=10, http_per_round=200, http_revokes=1000)
        if "auth" in parts:
            if not cofferd_built:
                progress(f"auth: skipped, {args.cofferd} is not built")
                results["auth_pending"] = "cofferd not built"
            elif smoke:
                # One round each of 3 s (AppRole, JWT; 16 connections) and 2 s of userpass (4 connections),
                # cofferd and OpenBao side by side: about 20 s with the two servers' start.
                progress("auth: AppRole, JWT and userpass logins over HTTP against OpenBao (issue 17)")
                results["auth"] = auth(args.cofferd, scratch, 3, 1, 16, 2, 4, batch=False)
            else:
                progress("auth: JWT and AppRole logins in process against one ES256 verify; AppRole (service and batch "
                         "tokens), JWT and userpass logins over HTTP against OpenBao")
                results["auth"] = auth(args.cofferd, scratch, 5, 3, 16, 5, 4, inprocess_iterations=3000, inprocess_rounds=10)
        if "events" in parts:
            progress("events: KV write → callback in process, write latency with 1,000 subscribers, over WebSocket")
            results["events"] = events(args.cofferd if cofferd_built else None, scratch, 500 if smoke else 5_000)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    results["goals"] = [{"goal": g, "measured": m, "met": met} for g, m, met in evaluate_goals(results)]
    table = markdown(results)
    print(table)
    if args.out:
        out = args.out
    elif smoke:
        out = os.path.join(BENCH_OUT, "smoke-results.json")
    else:
        out = os.path.join(ROOT, "bench", "results", datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    results["markdown"] = table
    with open(out, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    progress(f"wrote {os.path.relpath(out, ROOT)} ({int(time.monotonic() - STARTED)} s in all)")

    if smoke:
        thresholds = read_json(os.path.join(ROOT, "bench", "thresholds.json"))
        failures = check_thresholds(results, thresholds)
        if failures:
            print("\nbench-smoke FAILED:\n  " + "\n  ".join(failures))
            sys.exit(1)
        print("\nbench-smoke passed: KV retrieval p99 within the SLO, every in-process figure within bench/thresholds.json, "
              "database creds within the 200 ms SLO and their ratios within bench/thresholds.json"
              + (", PKI issue and revoke + CRL within bench/thresholds.json's pki.smoke" if "pki" in parts else "")
              + (", AppRole and JWT logins within bench/thresholds.json's auth.smoke" if "auth" in parts else ""))


if __name__ == "__main__":
    main()
