"""A short fault campaign on real multi-process Raft clusters (issue 18), checked for linearizability.

Three `coffer-raft-node` processes (the replicated storage layer, RaftBackend, each over its own SQLite
files) on loopback. Client threads write and read three keys through every node while a nemesis kills
the leader with SIGKILL, restarts it from its files, and freezes nodes with SIGSTOP/SIGCONT. Every
client operation is recorded with its call and return time; a write whose answer never came, or came as
an error, is indeterminate (it may have committed). The history must be linearizable: no acknowledged
write lost, no stale read (every read here is linearizable: a ReadIndex round first).

`RAFT_CAMPAIGN_SECONDS` (default 12) and `RAFT_CAMPAIGN_RUNS` (default 1) make a longer campaign;
`make raft-campaign` runs one.
"""

import os
import random
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port
from linearizability import INDETERMINATE, Op, check_campaign

KEYS = ["a", "b", "c"]


def node_binary():
    cofferd = os.environ.get("COFFERD", "")
    path = os.environ.get("COFFER_RAFT_NODE") or os.path.join(os.path.dirname(cofferd), "coffer-raft-node")
    if not os.access(path, os.X_OK):
        pytest.fail(f"coffer-raft-node not found at {path} (swift build --product coffer-raft-node)", pytrace=False)
    return path


class Cluster:
    def __init__(self, binary, directory, size=3):
        self.binary = binary
        self.directory = directory
        self.ids = list(range(1, size + 1))
        self.cluster_ports = {i: free_port() for i in self.ids}
        self.client_ports = {i: free_port() for i in self.ids}
        self.peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in self.cluster_ports.items())
        self.procs = {}
        self.frozen = set()
        for i in self.ids:
            os.makedirs(f"{directory}/n{i}", exist_ok=True)
            self.start(i)

    def start(self, i):
        proc = subprocess.Popen(
            [self.binary, str(i), f"{self.directory}/n{i}", str(self.client_ports[i]), self.peers],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "RAFT_TICK_MS": "30"},
        )
        line = proc.stdout.readline()
        assert line == b"ready\n", f"node {i} did not start: {line!r} {proc.stderr.read()[:2000]!r}"
        self.procs[i] = proc

    def kill(self, i):
        proc = self.procs.pop(i)
        self.frozen.discard(i)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def freeze(self, i):
        self.procs[i].send_signal(signal.SIGSTOP)
        self.frozen.add(i)

    def thaw(self, i):
        if i in self.procs:
            self.procs[i].send_signal(signal.SIGCONT)
        self.frozen.discard(i)

    def stop_all(self):
        for i in list(self.procs):
            self.thaw(i)
            self.kill(i)

    def status(self, i, timeout=0.5):
        try:
            with socket.create_connection(("127.0.0.1", self.client_ports[i]), timeout=timeout) as s:
                s.sendall(b"STATUS\n")
                reply = s.makefile().readline().split()
                return dict(kv.split("=") for kv in reply[1:])
        except OSError:
            return None

    def leader(self, within=10.0):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for i in self.procs:
                if i in self.frozen:
                    continue
                status = self.status(i)
                if status and int(status["leader"]) == i:
                    return i
            time.sleep(0.02)
        return None


class Client:
    """One client thread's connection to one node at a time; every operation goes into the history."""

    def __init__(self, cid, cluster, history, lock, rng):
        self.cid = cid
        self.cluster = cluster
        self.history = history
        self.lock = lock
        self.rng = rng
        self.counter = 0

    def request(self, node, line):
        with socket.create_connection(("127.0.0.1", self.cluster.client_ports[node]), timeout=1.5) as s:
            s.settimeout(3.0)
            s.sendall(line.encode() + b"\n")
            reply = s.makefile().readline()
            if not reply.endswith("\n"):
                raise OSError("connection closed mid-answer")
            return reply.rstrip("\n")

    def run(self, until):
        while time.monotonic() < until:
            node = self.rng.choice(self.cluster.ids)
            key = self.rng.choice(KEYS)
            if self.rng.random() < 0.5:
                self.counter += 1
                value = f"c{self.cid}-{self.counter}"
                call = time.monotonic()
                try:
                    reply = self.request(node, f"PUT {key} {value}")
                    ret = time.monotonic() if reply == "OK" else INDETERMINATE
                except OSError:
                    ret = INDETERMINATE
                op = Op(self.cid, "write", key, value, call, ret)
            else:
                call = time.monotonic()
                try:
                    reply = self.request(node, f"GET {key}")
                except OSError:
                    continue  # a read with no answer tells nothing
                ret = time.monotonic()
                if reply == "NONE":
                    value = None
                elif reply.startswith("VAL "):
                    value = reply[4:]
                else:
                    continue  # refused (no leader confirmed it): nothing was read
                op = Op(self.cid, "read", key, value, call, ret)
            with self.lock:
                self.history.append(op)
            time.sleep(self.rng.random() * 0.01)


def nemesis(cluster, rng, until, log):
    """Kills the leader, restarts the dead, freezes and thaws, keeping a quorum alive most of the time."""
    faults = 0
    while time.monotonic() < until - 2:
        time.sleep(0.8 + rng.random())
        dead = [i for i in cluster.ids if i not in cluster.procs]
        if dead:
            i = dead[0]
            cluster.start(i)
            log.append(("restart", i, time.monotonic()))
            continue
        if cluster.frozen:
            i = next(iter(cluster.frozen))
            cluster.thaw(i)
            log.append(("thaw", i, time.monotonic()))
            continue
        # Every third fault is a freeze, the others kill the leader.
        faults += 1
        action = "freeze" if faults % 3 == 2 else "kill-leader"
        if action == "kill-leader":
            leader = cluster.leader(within=3)
            if leader:
                cluster.kill(leader)
                log.append(("kill -9 leader", leader, time.monotonic()))
        else:
            i = rng.choice(list(cluster.procs))
            cluster.freeze(i)
            log.append(("SIGSTOP", i, time.monotonic()))
    for i in list(cluster.frozen):
        cluster.thaw(i)
    for i in cluster.ids:
        if i not in cluster.procs:
            cluster.start(i)


@pytest.mark.parametrize("run", range(int(os.environ.get("RAFT_CAMPAIGN_RUNS", "1"))))
def test_a_cluster_under_kills_and_pauses_stays_linearizable(workdir, run):
    seed = int(os.environ.get("RAFT_CAMPAIGN_SEED", "0")) + run
    rng = random.Random(seed)
    seconds = float(os.environ.get("RAFT_CAMPAIGN_SECONDS", "12"))
    cluster = Cluster(node_binary(), workdir)
    try:
        assert cluster.leader() is not None, "no leader was elected"
        history, lock, log = [], threading.Lock(), []
        until = time.monotonic() + seconds
        clients = [Client(c, cluster, history, lock, random.Random(seed * 100 + c)) for c in range(4)]
        threads = [threading.Thread(target=c.run, args=(until,)) for c in clients]
        threads.append(threading.Thread(target=nemesis, args=(cluster, rng, until, log)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Healed: every node answers, and a final read through each sees the same values.
        assert cluster.leader() is not None
        finals = []
        for node in cluster.ids:
            for key in KEYS:
                call = time.monotonic()
                reply = clients[0].request(node, f"GET {key}")
                assert reply == "NONE" or reply.startswith("VAL "), f"node {node} refused a read after healing: {reply}"
                finals.append(Op(99, "read", key, None if reply == "NONE" else reply[4:], call, time.monotonic()))
        history += finals

        result = check_campaign(history, log, f"raft campaign seed {seed}")
        assert result.ok, result.explanation
    finally:
        cluster.stop_all()
