#!/usr/bin/env python3
"""Raft failover and replicated-write figures (issue 18), Coffer's storage layer beside OpenBao's raft cluster.

    python3 bench/raft.py --node .build/.../release/coffer-raft-node [--bao .venv/bin/bao] [--runs 20]

Coffer's storage layer: three `coffer-raft-node` processes (RaftBackend over SQLite, fsync on every node,
30 ms ticks) on loopback, driven over their line protocol. With `--cofferd` (alone: `--only cofferd-failover`,
about two minutes): three cofferd processes with storage "raft", the whole server. OpenBao: three `bao server`
processes with raft storage and a static seal, once with default timing and once with
`performance_multiplier = 1`. cofferd and OpenBao are driven alike: KV v2 writes to the active node over one
keep-alive HTTP connection (as hvac and other long-lived clients talk) for the write figures, fresh
connections for the failover probes. The storage layer's write figure is not the same stack, and is reported
side by side only.

Standby reads (`--cofferd`; alone with `--only standby-read`, about a minute): on the formed 3-node cofferd
cluster, KV v2 reads over HTTP (one keep-alive connection per node, the same client code for each) from a
standby and from the active node, beside a single-node cofferd (storage "sqlite", not clustered, its own temp
dir) started in the same run, in alternating blocks; also the standby with the X-Vault-Index of the secret's
write sent back. The issue's goal: a standby's read within 1.2x of a
single node's (p50). Then writes through the standby (forwarded to the active node) beside writes to the
active node, in alternating blocks.

A large state (`--only large-state --node <coffer-raft-node>`, about 10 s): 4 clients write 8,000 values of 4 KB
(32 MB) to the leader, with a snapshot every 64 entries; reported: the writes' p50/p99/max, how many failed,
and whether the leader changed (when each snapshot copied the whole state, it paused the node past an
election timeout). Then a follower is killed, misses 200 more writes (more than the leader's log keeps), and
is restarted while one client keeps writing 50 values a second: the leader sends it the whole state, and the
client's writes meanwhile are reported (when the leader read the state on its Raft thread, they stalled while it did),
with the peak resident memory of the leader and of the follower.

Failover: for each run, kill -9 the leader and time, from the kill, the first write acknowledged by a
survivor (clients retry every 5 ms on Coffer, 50 ms on OpenBao, as the fact sheet measured). The killed
node is restarted and must catch up before the next run. Also checked: restarting a follower while the
leader is healthy never changes the term (no election).
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from benchlib import cpu_seconds, free_port


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def check_failover_deadline(killed_at, limit=120):
    """A cluster that accepts no write for `limit` seconds after losing its leader is broken, not slow: say so
    rather than wait for ever (OpenBao's default timing needs up to about 20 s)."""
    if time.monotonic() - killed_at > limit:
        raise RuntimeError(f"no survivor accepted a write within {limit} s of the leader's kill -9")


def summary(samples):
    return {"n": len(samples), "p50": statistics.median(samples), "p99": pct(samples, 99), "max": max(samples)}


# ---- Coffer: coffer-raft-node ----------------------------------------------------------------------


class CofferCluster:
    def __init__(self, binary, directory):
        self.binary, self.directory = binary, directory
        self.ids = [1, 2, 3]
        self.cluster = {i: free_port() for i in self.ids}
        self.client = {i: free_port() for i in self.ids}
        self.peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in self.cluster.items())
        self.procs = {}
        for i in self.ids:
            os.makedirs(f"{directory}/n{i}")
            self.start(i)

    def start(self, i):
        p = subprocess.Popen([self.binary, str(i), f"{self.directory}/n{i}", str(self.client[i]), self.peers],
                             stdout=subprocess.PIPE, env={**os.environ, "RAFT_TICK_MS": "30"})
        assert p.stdout.readline() == b"ready\n"
        self.procs[i] = p

    def kill(self, i):
        self.procs.pop(i).kill()

    def stop(self):
        for i in list(self.procs):
            self.kill(i)

    def request(self, i, line, timeout=3.0):
        with socket.create_connection(("127.0.0.1", self.client[i]), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(line.encode() + b"\n")
            return s.makefile().readline().strip()

    def status(self, i):
        try:
            return dict(kv.split("=") for kv in self.request(i, "STATUS", 0.5).split()[1:])
        except (OSError, ValueError):
            return None

    def leader(self, within=15):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for i in self.procs:
                st = self.status(i)
                if st and int(st["leader"]) == i:
                    return i
            time.sleep(0.01)
        raise RuntimeError("no Coffer leader")

    def caught_up(self, i, within=20):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            leader = self.leader()
            a, b = self.status(i), self.status(leader)
            if a and b and int(a["applied"]) >= int(b["commit"]):
                return
            time.sleep(0.05)
        raise RuntimeError(f"node {i} did not catch up")


def coffer_bench(binary, runs, write_seconds):
    directory = tempfile.mkdtemp(prefix="coffer-raft-bench-")
    c = CofferCluster(binary, directory)
    try:
        leader = c.leader()
        # Replicated writes through the leader, one at a time.
        latencies = []
        end = time.monotonic() + write_seconds
        n = 0
        while time.monotonic() < end:
            t = time.perf_counter()
            assert c.request(leader, f"PUT k{n % 100} value-{n}") == "OK"
            latencies.append((time.perf_counter() - t) * 1000)
            n += 1
        writes = summary(latencies)
        writes["per_second"] = n / write_seconds

        # A follower restarted while the leader is healthy: no election.
        follower = next(i for i in c.ids if i != leader)
        term = c.status(leader)["term"]
        c.kill(follower)
        time.sleep(0.5)
        c.start(follower)
        c.caught_up(follower)
        time.sleep(1.0)
        restarted_follower_kept_term = c.status(leader)["term"] == term and c.leader() == leader

        failovers = []
        for run in range(runs):
            leader = c.leader()
            survivors = [i for i in c.ids if i != leader]
            killed_at = time.monotonic()
            c.kill(leader)
            k = 0
            while True:
                check_failover_deadline(killed_at)
                node = survivors[k % 2]
                k += 1
                try:
                    if c.request(node, f"PUT failover-{run} {k}", timeout=2) == "OK":
                        failovers.append((time.monotonic() - killed_at) * 1000)
                        break
                except OSError:
                    pass
                time.sleep(0.005)
            c.start(leader)
            c.caught_up(leader)
        return {"writes_ms": writes, "failover_ms": summary(failovers), "failover_runs_ms": failovers,
                "restarted_follower_kept_term": restarted_follower_kept_term}
    finally:
        c.stop()
        shutil.rmtree(directory, ignore_errors=True)


def peak_rss_mb(pid):
    """A process's peak resident memory (VmHWM) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def large_state_bench(binary, values, value_kb, clients=4):
    """Writes `values` values of `value_kb` KB to the leader of three coffer-raft-node processes (a snapshot
    every 64 entries) from `clients` connections at once, so the state grows past what a snapshot of the
    whole data file could take within an election timeout: the writes' latencies, the failures and whether
    the leader changed."""
    directory = tempfile.mkdtemp(prefix="coffer-raft-large-")
    c = CofferCluster(binary, directory)
    try:
        leader = c.leader()
        term = c.status(leader)["term"]
        value = "x" * (value_kb * 1024)
        latencies, failures = [], []
        lock = threading.Lock()

        def writer(w):
            with socket.create_connection(("127.0.0.1", c.client[leader]), timeout=10) as s:
                lines = s.makefile("rb")
                for i in range(values // clients):
                    t = time.perf_counter()
                    s.sendall(f"PUT k{w}-{i} {value}\n".encode())
                    answer = lines.readline().strip()
                    with lock:
                        (latencies if answer == b"OK" else failures).append((time.perf_counter() - t) * 1000)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.monotonic() - started
        now = c.leader()
        changed = now != leader or c.status(now)["term"] != term

        # A follower that missed more than the leader's log keeps gets the whole state, while a client
        # keeps writing one value at a time: the leader's writes during the catch-up.
        follower = next(i for i in c.ids if i != leader)
        c.kill(follower)
        with socket.create_connection(("127.0.0.1", c.client[leader]), timeout=10) as s:
            lines = s.makefile("rb")
            for i in range(200):
                s.sendall(f"PUT missed-{i} {value}\n".encode())
                assert lines.readline().strip() == b"OK"
        during, failed_during = [], [0]
        done = threading.Event()

        def catch_up_writer():
            with socket.create_connection(("127.0.0.1", c.client[leader]), timeout=10) as s:
                lines = s.makefile("rb")
                n = 0
                while not done.is_set():
                    t = time.perf_counter()
                    s.sendall(f"PUT during-{n % 100} {n}\n".encode())
                    if lines.readline().strip() == b"OK":
                        during.append((time.perf_counter() - t) * 1000)
                    else:
                        failed_during[0] += 1
                    n += 1
                    # 50 writes/s: faster, and the log would outrun the 16 entries the harness keeps below a
                    # snapshot while the follower installs the state, so it would need another.
                    time.sleep(0.02)

        thread = threading.Thread(target=catch_up_writer)
        thread.start()
        time.sleep(0.2)
        restarted = time.monotonic()
        c.start(follower)
        c.caught_up(follower, within=60)
        catch_up_seconds = time.monotonic() - restarted
        time.sleep(0.2)
        done.set()
        thread.join()
        now = c.leader()
        return {"writes_ms": summary(latencies), "failed": len(failures), "seconds": seconds,
                "megabytes": values * value_kb / 1024, "leader_changed": changed,
                "catch_up": {"seconds": catch_up_seconds, "writes_ms": summary(during), "failed": failed_during[0],
                             "leader_changed": now != leader or c.status(now)["term"] != term,
                             "peak_rss_mb": {"leader": peak_rss_mb(c.procs[leader].pid),
                                             "follower": peak_rss_mb(c.procs[follower].pid)}}}
    finally:
        c.stop()
        shutil.rmtree(directory, ignore_errors=True)


# ---- OpenBao: bao server with raft ---------------------------------------------------------------


class BaoCluster:
    def __init__(self, bao, directory, multiplier):
        self.bao, self.directory = bao, directory
        self.ids = [1, 2, 3]
        self.api = {i: free_port() for i in self.ids}
        self.cl = {i: free_port() for i in self.ids}
        with open(f"{directory}/unseal.key", "w") as f:
            f.write("0" * 64)
        self.configs = {}
        for i in self.ids:
            os.makedirs(f"{directory}/n{i}")
            joins = "".join(f'retry_join {{ leader_api_addr = "http://127.0.0.1:{self.api[j]}" }}\n' for j in self.ids if j != i)
            pm = f"performance_multiplier = {multiplier}" if multiplier else ""
            self.configs[i] = f"""
storage "raft" {{
  path = "{directory}/n{i}"
  node_id = "n{i}"
  {pm}
  {joins}
}}
listener "tcp" {{
  address = "127.0.0.1:{self.api[i]}"
  cluster_address = "127.0.0.1:{self.cl[i]}"
  tls_disable = true
}}
seal "static" {{
  current_key_id = "k1"
  current_key = "file://{directory}/unseal.key"
}}
api_addr = "http://127.0.0.1:{self.api[i]}"
cluster_addr = "https://127.0.0.1:{self.cl[i]}"
disable_mlock = true
"""
            with open(f"{directory}/n{i}.hcl", "w") as f:
                f.write(self.configs[i])
        self.procs = {}
        try:
            self.start(1)
            self.wait_up(1)
            body = self.call(1, "PUT", "sys/init", {"recovery_shares": 1, "recovery_threshold": 1}, timeout=120)
            self.token = body["root_token"]
            self.wait_active(1)
            self.call(1, "POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}, token=self.token,
                      timeout=30)
            for i in (2, 3):
                self.start(i)
            self.wait_voters(3)
        except BaseException:
            self.stop()
            raise

    def start(self, i):
        log = open(f"{self.directory}/n{i}.log", "ab")
        self.procs[i] = subprocess.Popen([self.bao, "server", f"-config={self.directory}/n{i}.hcl"], stdout=log, stderr=log)

    def kill(self, i):
        p = self.procs.pop(i)
        p.kill()
        p.wait()

    def stop(self):
        for i in list(self.procs):
            self.kill(i)

    def call(self, i, method, path, body=None, token=None, timeout=5):
        req = urllib.request.Request(f"http://127.0.0.1:{self.api[i]}/v1/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        if token:
            req.add_header("X-Vault-Token", token)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
            return json.loads(text) if text else {}

    def wait_up(self, i, within=30):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                self.call(i, "GET", "sys/seal-status")
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError(f"bao n{i} did not start")

    def wait_active(self, i, within=30):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if self.call(i, "GET", "sys/leader").get("is_self"):
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"bao n{i} did not become active")

    def leader(self, within=60):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for i in self.procs:
                try:
                    if self.call(i, "GET", "sys/leader", timeout=1).get("is_self"):
                        return i
                except Exception:
                    pass
            time.sleep(0.1)
        raise RuntimeError("no OpenBao leader")

    def wait_voters(self, count, within=90):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                leader = self.leader()
                servers = self.call(leader, "GET", "sys/storage/raft/configuration", token=self.token)["data"]["config"]["servers"]
                if sum(1 for s in servers if s["voter"]) >= count and len(servers) >= count:
                    return
            except Exception:
                pass
            time.sleep(0.5)
        raise RuntimeError("OpenBao nodes did not all become voters")

    def put(self, i, n, timeout=2):
        self.call(i, "POST", "secret/data/bench", {"data": {"n": n}}, token=self.token, timeout=timeout)


# ---- cofferd: storage "raft", the whole server ---------------------------------------------------


class CofferdCluster(BaoCluster):
    """Three `cofferd -config=nN.hcl` with storage "raft" and a Shamir seal (one share): n1 is initialised,
    n2 and n3 join through retry_join; every start is followed by an unseal, as an operator would."""

    def __init__(self, cofferd, directory):
        self.bao, self.directory = cofferd, directory
        self.ids = [1, 2, 3]
        self.api = {i: free_port() for i in self.ids}
        self.cl = {i: free_port() for i in self.ids}
        self.procs = {}
        for i in self.ids:
            joins = "".join(f'  retry_join {{ leader_api_addr = "http://127.0.0.1:{self.api[j]}" }}\n'
                            for j in self.ids if j != i and i != 1)
            with open(f"{directory}/n{i}.hcl", "w") as f:
                f.write(f'storage "raft" {{\n  path = "{directory}/n{i}"\n  node_id = "n{i}"\n{joins}}}\n'
                        f'listener "tcp" {{ address = "127.0.0.1:{self.api[i]}" tls_disable = true }}\n'
                        f'api_addr = "http://127.0.0.1:{self.api[i]}"\ncluster_addr = "127.0.0.1:{self.cl[i]}"\n')
        try:
            self.start_process(1)
            self.wait_up(1)
            body = self.call(1, "PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, timeout=60)
            self.token, self.key = body["root_token"], body["keys"][0]
            self.call(1, "PUT", "sys/unseal", {"key": self.key})
            self.wait_active(1)
            self.call(1, "POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}, token=self.token,
                      timeout=30)
            for i in (2, 3):
                self.start(i)
            self.wait_voters(3)
        except BaseException:
            self.stop()
            raise

    def start_process(self, i):
        log = open(f"{self.directory}/n{i}.log", "ab")
        self.procs[i] = subprocess.Popen([self.bao, f"-config={self.directory}/n{i}.hcl"], stdout=log, stderr=log)

    def start(self, i):
        self.start_process(i)
        self.wait_up(i)
        self.call(i, "PUT", "sys/unseal", {"key": self.key})


# ---- Standby reads: a standby's KV read beside the active node's and a single node's -------------


class SingleCofferd(BaoCluster):
    """One cofferd on a SQLite file of its own (no cluster): the single-node read a standby's is compared with."""

    def __init__(self, cofferd, directory):
        self.bao, self.directory = cofferd, directory
        self.ids = [1]
        self.api = {1: free_port()}
        self.procs = {}
        with open(f"{directory}/single.hcl", "w") as f:
            f.write(f'storage "sqlite" {{ path = "{directory}/single.db" }}\n'
                    f'listener "tcp" {{ address = "127.0.0.1:{self.api[1]}" tls_disable = true }}\n')
        try:
            log = open(f"{directory}/single.log", "ab")
            self.procs[1] = subprocess.Popen([cofferd, f"-config={directory}/single.hcl"], stdout=log, stderr=log)
            self.wait_up(1)
            body = self.call(1, "PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, timeout=60)
            self.token = body["root_token"]
            self.call(1, "PUT", "sys/unseal", {"key": body["keys"][0]})
            self.call(1, "POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}, token=self.token,
                      timeout=30)
        except BaseException:
            self.stop()
            raise


class KVClient:
    """KV v2 reads and writes of /v1/secret/data/<path> over one keep-alive HTTP/1.1 connection, as hvac and
    other long-lived clients talk; the same code for every node and server."""

    def __init__(self, port, token, path, index=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self.headers = {"X-Vault-Token": token, **({"X-Vault-Index": index} if index else {})}
        self.path = f"/v1/secret/data/{path}"
        self.connections = 0

    def read(self):
        if self.conn.sock is None:
            self.connections += 1  # http.client connects (again) when the server closed the connection
        self.conn.request("GET", self.path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {self.path}: HTTP {response.status}: {body[:200]!r}")
        return body

    def write(self, n):
        self.conn.request("POST", self.path, body=json.dumps({"data": {"n": n}}),
                          headers={**self.headers, "Content-Type": "application/json"})
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {self.path}: HTTP {response.status}: {body[:200]!r}")

    def close(self):
        self.conn.close()


def standby_read_bench(cofferd, reads, block=500):
    """Reads of one KV v2 secret from a standby, the active node and a single node, in alternating blocks of
    `block` (the order rotates every round), `reads` from each, after a warm-up block each. Also from the
    standby with the X-Vault-Index the write answered (what a client that wants to read its writes sends
    back; the standby checks it against its applied index on every read)."""
    directory = tempfile.mkdtemp(prefix="coffer-standby-read-")
    os.makedirs(f"{directory}/cluster")
    os.makedirs(f"{directory}/single")
    cluster = single = None
    readers = {}
    try:
        cluster = CofferdCluster(cofferd, f"{directory}/cluster")
        single = SingleCofferd(cofferd, f"{directory}/single")
        active = cluster.leader()
        standby = next(i for i in cluster.ids if i != active)
        secret = {"username": "app", "password": "x" * 32}
        request = urllib.request.Request(f"http://127.0.0.1:{cluster.api[active]}/v1/secret/data/bench-read",
                                         data=json.dumps({"data": secret}).encode(), method="POST",
                                         headers={"X-Vault-Token": cluster.token})
        with urllib.request.urlopen(request, timeout=10) as response:
            index = response.headers["X-Vault-Index"]
        assert index, "the active node's answer carries no X-Vault-Index"
        single.call(1, "POST", "secret/data/bench-read", {"data": secret}, token=single.token)
        readers = {"single": KVClient(single.api[1], single.token, "bench-read"),
                   "standby": KVClient(cluster.api[standby], cluster.token, "bench-read"),
                   "active": KVClient(cluster.api[active], cluster.token, "bench-read"),
                   "standby_with_index": KVClient(cluster.api[standby], cluster.token, "bench-read", index)}
        deadline = time.monotonic() + 30
        while True:  # the standby has applied the write once it answers it
            try:
                if json.loads(readers["standby"].read())["data"]["data"] == secret:
                    break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.01)
        for name, reader in readers.items():
            assert json.loads(reader.read())["data"]["data"] == secret, name
            for _ in range(block):
                reader.read()
        samples = {name: [] for name in readers}
        order = list(readers)
        for round in range(max(1, reads // block)):
            for name in order[round % len(order):] + order[:round % len(order)]:
                read, out = readers[name].read, samples[name]
                for _ in range(block):
                    t = time.perf_counter_ns()
                    read()
                    out.append((time.perf_counter_ns() - t) / 1000)
        result = {}
        for name, values in samples.items():
            s = sorted(values)
            result[name] = {"n": len(s), "p50_us": statistics.median(s), "p99_us": pct(s, 99), "max_us": s[-1],
                            "connections": readers[name].connections}
        result["p50_ratio_standby_over_single"] = result["standby"]["p50_us"] / result["single"]["p50_us"]
        result["p50_ratio_active_over_single"] = result["active"]["p50_us"] / result["single"]["p50_us"]
        result["p50_ratio_standby_with_index_over_single"] = (result["standby_with_index"]["p50_us"]
                                                             / result["single"]["p50_us"])
        result["block"] = block
        # Writes through the standby (forwarded whole to the active node over its API) and to the active node,
        # in alternating blocks of 50, 200 each after a warm-up block each.
        writers = {"write_active": readers["active"], "write_standby": readers["standby"]}
        written = {name: [] for name in writers}
        for round in range(5):
            for name, writer in writers.items():
                for n in range(50):
                    t = time.perf_counter_ns()
                    writer.write(n)
                    if round > 0:
                        written[name].append((time.perf_counter_ns() - t) / 1000)
        for name, values in written.items():
            s = sorted(values)
            result[name] = {"n": len(s), "p50_us": statistics.median(s), "p99_us": pct(s, 99), "max_us": s[-1],
                            "connections": writers[name].connections}
        result["p50_ratio_write_standby_over_active"] = result["write_standby"]["p50_us"] / result["write_active"]["p50_us"]
        return result
    finally:
        for reader in readers.values():
            reader.close()
        for c in (cluster, single):
            if c:
                c.stop()
        shutil.rmtree(directory, ignore_errors=True)


def print_standby_read(r):
    print("KV v2 read over HTTP (keep-alive), alternating blocks of", r["block"])
    for name in ("single", "standby", "active", "standby_with_index"):
        x = r[name]
        print(f"  {name:18} p50 {x['p50_us']:7.1f} us  p99 {x['p99_us']:7.1f} us  max {x['max_us']:8.1f} us  "
              f"(n={x['n']}, connections={x['connections']})")
    ratio = r["p50_ratio_standby_over_single"]
    print(f"standby / single-node read p50: {ratio:.2f}x (goal <= 1.2x: {'met' if ratio <= 1.2 else 'not met'}); "
          f"active / single-node: {r['p50_ratio_active_over_single']:.2f}x; standby with X-Vault-Index / single-node: "
          f"{r['p50_ratio_standby_with_index_over_single']:.2f}x")
    if "write_standby" in r:
        print("KV v2 write over HTTP (keep-alive), alternating blocks of 50")
        for name in ("write_active", "write_standby"):
            x = r[name]
            print(f"  {name:18} p50 {x['p50_us']:7.1f} us  p99 {x['p99_us']:7.1f} us  max {x['max_us']:8.1f} us  "
                  f"(n={x['n']})")
        print(f"write through the standby (forwarded) / to the active node, p50: "
              f"{r['p50_ratio_write_standby_over_active']:.2f}x")


def bao_bench(bao, runs, write_seconds, multiplier, cluster=None):
    directory = tempfile.mkdtemp(prefix="coffer-bao-raft-")
    c = cluster(directory) if cluster else BaoCluster(bao, directory, multiplier)
    try:
        leader = c.leader()
        latencies, n = [], 0
        client = KVClient(c.api[leader], c.token, "bench")
        cpu_before = {i: cpu_seconds(p.pid) for i, p in c.procs.items()}
        end = time.monotonic() + write_seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            client.write(n)
            latencies.append((time.perf_counter() - t) * 1000)
            n += 1
        client.close()
        writes = summary(latencies)
        writes["per_second"] = n / write_seconds
        # The CPU each write cost the servers (on 2 cores shared by three nodes and the client, CPU
        # bounds the sequential write rate as much as the disk does).
        cpu = {i: (cpu_seconds(p.pid) - cpu_before[i]) * 1e6 / max(n, 1) for i, p in c.procs.items()}
        writes["cpu_us_per_write"] = {"leader": cpu[leader], "followers": sorted(v for i, v in cpu.items() if i != leader),
                                      "all_nodes": sum(cpu.values())}
        failovers = []
        for run in range(runs):
            leader = c.leader()
            survivors = [i for i in c.ids if i != leader]
            killed_at = time.monotonic()
            c.kill(leader)
            k = 0
            while True:
                check_failover_deadline(killed_at)
                try:
                    c.put(survivors[k % 2], k)
                    failovers.append((time.monotonic() - killed_at) * 1000)
                    break
                except Exception:
                    pass
                k += 1
                time.sleep(0.05)
            c.start(leader)
            c.wait_voters(3)
        return {"writes_ms": writes, "failover_ms": summary(failovers), "failover_runs_ms": failovers}
    finally:
        c.stop()
        shutil.rmtree(directory, ignore_errors=True)


def print_write_cpu(results):
    for name, r in results.items():
        cpu = r.get("writes_ms", {}).get("cpu_us_per_write")
        if cpu:
            print(f"CPU per KV write, {name}: {cpu['all_nodes']:.0f} us on all three nodes (leader {cpu['leader']:.0f}, "
                  f"followers {', '.join(f'{v:.0f}' for v in cpu['followers'])})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", help="the coffer-raft-node binary (release build); required unless --only")
    ap.add_argument("--bao", help="the OpenBao binary; without it only Coffer is measured")
    ap.add_argument("--cofferd", help="the cofferd binary: also measure a 3-node cofferd cluster over HTTP")
    ap.add_argument("--only", choices=["standby-read", "cofferd-failover", "large-state"],
                    help="run only this part: standby-read (needs --cofferd, about a minute), "
                         "cofferd-failover (needs --cofferd: the cofferd cluster's writes and failovers, about two "
                         "minutes), or large-state (needs --node: 8,000 writes of 4 KB from 4 clients, a snapshot "
                         "every 64 entries, to 32 MB)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--bao-runs", type=int, default=5)
    ap.add_argument("--write-seconds", type=float, default=3)
    ap.add_argument("--reads", type=int, default=20000, help="standby-read: reads from each node")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.only in ("standby-read", "cofferd-failover") and not args.cofferd:
        ap.error(f"--only {args.only} needs --cofferd")
    if args.only in (None, "large-state") and not args.node:
        ap.error("--node is required (unless --only standby-read or cofferd-failover)")
    results = {}
    if args.only == "large-state":
        r = results["coffer_large_state"] = large_state_bench(args.node, 8000, 4)
        w = r["writes_ms"]
        print(f"large state ({r['megabytes']:.0f} MB): {w['n']} writes, {r['failed']} failed, p50 {w['p50']:.2f} ms, "
              f"p99 {w['p99']:.2f} ms, max {w['max']:.1f} ms, {r['seconds']:.1f} s; the leader changed: "
              f"{r['leader_changed']}")
        u = r["catch_up"]
        print(f"a follower catching up from the whole state in {u['seconds']:.1f} s: {u['writes_ms']['n']} writes meanwhile, "
              f"{u['failed']} failed, p50 {u['writes_ms']['p50']:.2f} ms, p99 {u['writes_ms']['p99']:.2f} ms, max "
              f"{u['writes_ms']['max']:.1f} ms; the leader changed: {u['leader_changed']}; peak memory: leader "
              f"{u['peak_rss_mb']['leader']:.0f} MB, follower {u['peak_rss_mb']['follower']:.0f} MB")
    elif args.only == "standby-read":
        results["cofferd_standby_read"] = standby_read_bench(args.cofferd, args.reads)
        print_standby_read(results["cofferd_standby_read"])
    elif args.only == "cofferd-failover":
        d = results["cofferd"] = bao_bench(None, args.runs, args.write_seconds, None,
                                           cluster=lambda d: CofferdCluster(args.cofferd, d))
        f, w = d["failover_ms"], d["writes_ms"]
        print(f"cofferd failover p50 {f['p50']:.0f} ms, p99 {f['p99']:.0f} ms, max {f['max']:.0f} ms over {f['n']} "
              f"runs (goal p99 <= 1000 ms: {'met' if f['p99'] <= 1000 else 'not met'}); KV write p50 {w['p50']:.2f} ms, "
              f"p99 {w['p99']:.2f} ms, {w['per_second']:.0f}/s")
        print_write_cpu(results)
    if args.only:
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)
        return 0
    results["coffer"] = coffer_bench(args.node, args.runs, args.write_seconds)
    if args.cofferd:
        results["cofferd"] = bao_bench(None, args.runs, args.write_seconds, None,
                                       cluster=lambda d: CofferdCluster(args.cofferd, d))
        results["cofferd_standby_read"] = standby_read_bench(args.cofferd, args.reads)
    if args.bao:
        results["openbao_default"] = bao_bench(args.bao, args.bao_runs, args.write_seconds, None)
        results["openbao_multiplier_1"] = bao_bench(args.bao, args.bao_runs, args.write_seconds, 1)
    print(f"{'':28} {'failover p50':>13} {'p99':>9} {'max':>9} {'write p50':>10} {'p99':>8} {'writes/s':>9}")
    for name, r in results.items():
        if "failover_ms" not in r:
            continue
        f, w = r["failover_ms"], r["writes_ms"]
        print(f"{name:28} {f['p50']:>10.0f} ms {f['p99']:>6.0f} ms {f['max']:>6.0f} ms "
              f"{w['p50']:>7.2f} ms {w['p99']:>5.2f} ms {w['per_second']:>9.0f}")
    print_write_cpu(results)
    c = results["coffer"]
    print(f"failover goal p99 <= 1000 ms over {c['failover_ms']['n']} runs: "
          f"{'met' if c['failover_ms']['p99'] <= 1000 else 'not met'}; "
          f"a restarted follower left the leader's term alone: {c['restarted_follower_kept_term']}")
    for name in ("openbao_default", "openbao_multiplier_1"):
        for ours in ("coffer", "cofferd"):
            if name in results and ours in results:
                print(f"failover p50 ratio {name} / {ours}: "
                      f"{results[name]['failover_ms']['p50'] / results[ours]['failover_ms']['p50']:.1f}x")
    if "cofferd" in results:
        d = results["cofferd"]
        print(f"cofferd failover goal p99 <= 1000 ms over {d['failover_ms']['n']} runs: "
              f"{'met' if d['failover_ms']['p99'] <= 1000 else 'not met'}; replicated KV write p99 <= 5 ms: "
              f"{'met' if d['writes_ms']['p99'] <= 5 else 'not met'}")
        for name in ("openbao_default", "openbao_multiplier_1"):
            if name in results:
                print(f"KV writes/s cofferd / {name}: "
                      f"{d['writes_ms']['per_second'] / results[name]['writes_ms']['per_second']:.2f}x (goal >= 3x)")
        print_standby_read(results["cofferd_standby_read"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if c["failover_ms"]["p99"] <= 1000 and c["restarted_follower_kept_term"] else 1


if __name__ == "__main__":
    sys.exit(main())
