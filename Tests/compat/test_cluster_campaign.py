"""A fault campaign on real cofferd clusters (issue 18), checked for linearizability.

Three (or, with CLUSTER_CAMPAIGN_SIZES="3,5", also five) `cofferd` processes with storage "raft" on
loopback, unsealed with Shamir shares. Client threads write KV v2 secrets through random nodes (a standby
sends the write to the active node) and read them through random nodes with
`X-Coffer-Consistency: linearizable` (a ReadIndex round first), while a nemesis kills the active node
with SIGKILL, restarts and unseals it, freezes nodes with SIGSTOP/SIGCONT, and cuts Raft links through
proxies between the nodes (raftnet.py): it isolates the active node or another one, or cuts only what
reaches the active node (it can still send heartbeats but hears no answer). Every operation is
recorded with its call and return time; a write that failed or never answered is indeterminate. The
history must be linearizable: no acknowledged write lost, no stale read.

CLUSTER_CAMPAIGN_SECONDS (default 20) and CLUSTER_CAMPAIGN_RUNS (default 1) make longer campaigns;
`make raft-campaign` runs some.
"""

import json
import os
import random
import signal
import threading
import time

import pytest
import requests

from conftest import run_bao
from linearizability import INDETERMINATE, Op, check_campaign
from raftnet import RaftNet
from test_cluster import Node, peers, wait_for

KEYS = ["a", "b", "c"]
SIZES = [int(n) for n in os.environ.get("CLUSTER_CAMPAIGN_SIZES", "3").split(",")]
RUNS = int(os.environ.get("CLUSTER_CAMPAIGN_RUNS", "1"))


class Cluster:
    def __init__(self, cofferd_bin, bao_bin, workdir, size):
        self.bao_bin = bao_bin
        self.net = RaftNet()
        self.nodes = []
        self.frozen = set()
        self.dead = set()
        self.partitioned = False
        try:  # a cluster that does not form is stopped here: the test's `finally` never sees it
            first = Node(cofferd_bin, workdir, "n1", net=(self.net, 1))
            self.nodes.append(first)
            for i in range(2, size + 1):
                self.nodes.append(Node(cofferd_bin, workdir, f"n{i}", join=first.addr, net=(self.net, i)))
            _, out, _ = run_bao(bao_bin, first.addr, "operator", "init", "-key-shares=1", "-key-threshold=1",
                                "-format=json")
            init = json.loads(out)
            self.key, self.token = init["unseal_keys_b64"][0], init["root_token"]
            for node in self.nodes:
                self.unseal(node)
            wait_for(f"{size} voters", lambda: len(peers(bao_bin, first, self.token)) == size
                     and all(p["voter"] for p in peers(bao_bin, first, self.token).values()), timeout=60)
            run_bao(bao_bin, first.addr, "secrets", "enable", "-path=secret", "kv-v2", token=self.token)
        except BaseException:
            self.stop()
            raise

    def unseal(self, node):
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.put(f"{node.addr}/v1/sys/unseal", json={"key": self.key}, timeout=5)
                if r.status_code == 200 and not r.json()["sealed"]:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{node.name} did not unseal")
            time.sleep(0.1)

    def live(self):
        return [n for n in self.nodes if n not in self.dead and n not in self.frozen]

    def active(self, within=5.0, besides=None):
        """A live node (other than `besides`) that says it is active, waiting up to `within` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for node in self.live():
                try:
                    if node is not besides and node.get("sys/leader").json().get("is_self"):
                        return node
                except (requests.RequestException, ValueError):
                    pass
            time.sleep(0.05)
        return None

    def kill(self, node):
        node.kill()
        self.dead.add(node)
        self.frozen.discard(node)

    def restart(self, node):
        node.start()
        self.unseal(node)
        self.dead.discard(node)

    def freeze(self, node):
        node.server.proc.send_signal(signal.SIGSTOP)
        self.frozen.add(node)

    def thaw(self, node):
        node.server.proc.send_signal(signal.SIGCONT)
        self.frozen.discard(node)

    def isolate(self, node):
        self.net.isolate(self.nodes.index(node) + 1)
        self.partitioned = True

    def cut_into(self, node):
        """Cuts every link into `node`; what it sends still arrives."""
        index = self.nodes.index(node) + 1
        for other in range(1, len(self.nodes) + 1):
            if other != index:
                self.net.cut(other, index)
        self.partitioned = True

    def heal(self):
        self.net.heal()
        self.partitioned = False

    def stop(self):
        for node in list(self.frozen):
            self.thaw(node)
        for node in self.nodes:
            node.stop()
        self.net.close()


class Client:
    def __init__(self, cid, cluster, history, lock, rng):
        self.cid, self.cluster, self.history, self.lock, self.rng = cid, cluster, history, lock, rng
        self.counter = 0
        self.session = requests.Session()
        self.session.headers["X-Vault-Token"] = cluster.token

    def write(self, node, key, value):
        call = time.monotonic()
        try:
            r = self.session.put(f"{node.addr}/v1/secret/data/{key}", json={"data": {"v": value}}, timeout=3)
            ret = time.monotonic() if r.status_code == 200 else INDETERMINATE
        except requests.RequestException:
            ret = INDETERMINATE
        return Op(self.cid, "write", key, value, call, ret)

    def read(self, node, key):
        call = time.monotonic()
        try:
            r = self.session.get(f"{node.addr}/v1/secret/data/{key}", timeout=3,
                                 headers={"X-Coffer-Consistency": "linearizable"})
        except requests.RequestException:
            return None  # a read with no answer tells nothing
        ret = time.monotonic()
        if r.status_code == 404:
            return Op(self.cid, "read", key, None, call, ret)
        if r.status_code != 200:
            return None  # refused (no leader confirmed it, sealed, restarting): nothing was read
        return Op(self.cid, "read", key, r.json()["data"]["data"]["v"], call, ret)

    def run(self, until):
        while time.monotonic() < until:
            node = self.rng.choice(self.cluster.nodes)
            key = self.rng.choice(KEYS)
            if self.rng.random() < 0.5:
                self.counter += 1
                op = self.write(node, key, f"c{self.cid}-{self.counter}")
            else:
                op = self.read(node, key)
            if op:
                with self.lock:
                    self.history.append(op)
            time.sleep(self.rng.random() * 0.01)


def nemesis(cluster, rng, until, log):
    faults = 0
    while time.monotonic() < until - 3:
        time.sleep(1.0 + rng.random())
        if cluster.dead:
            node = next(iter(cluster.dead))
            cluster.restart(node)
            log.append(("restart", node.name, time.monotonic()))
            continue
        if cluster.frozen:
            node = next(iter(cluster.frozen))
            cluster.thaw(node)
            log.append(("thaw", node.name, time.monotonic()))
            continue
        if cluster.partitioned:
            cluster.heal()
            log.append(("heal", "all links", time.monotonic()))
            continue
        faults += 1
        kind = faults % 5
        if kind == 2:
            node = rng.choice(cluster.live())
            cluster.freeze(node)
            log.append(("SIGSTOP", node.name, time.monotonic()))
        elif kind == 4:
            node = rng.choice(cluster.live())
            cluster.isolate(node)
            log.append(("isolate", node.name, time.monotonic()))
        else:
            active = cluster.active(within=3)
            if not active:
                continue
            if kind == 1:
                cluster.kill(active)
                log.append(("kill -9 active", active.name, time.monotonic()))
            else:
                # The cut must depose the active node: the others elect one of their own (for a one-way
                # cut, once check-quorum has made the old one step down and its heartbeats stop).
                if kind == 3:
                    cluster.isolate(active)
                    log.append(("isolate active", active.name, time.monotonic()))
                else:
                    cluster.cut_into(active)
                    log.append(("cut links into active", active.name, time.monotonic()))
                successor = cluster.active(within=5, besides=active)
                log.append(("active while cut off", successor.name if successor else "none", time.monotonic()))
    for node in list(cluster.frozen):
        cluster.thaw(node)
    cluster.heal()
    for node in list(cluster.dead):
        cluster.restart(node)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("run", range(RUNS))
def test_a_cofferd_cluster_under_kills_pauses_and_partitions_stays_linearizable(cofferd_bin, bao_bin, workdir, size, run):
    seed = int(os.environ.get("CLUSTER_CAMPAIGN_SEED", "0")) + run
    rng = random.Random(seed)
    seconds = float(os.environ.get("CLUSTER_CAMPAIGN_SECONDS", "20"))
    cluster = Cluster(cofferd_bin, bao_bin, workdir, size)
    try:
        history, lock, log = [], threading.Lock(), []
        until = time.monotonic() + seconds
        clients = [Client(c, cluster, history, lock, random.Random(seed * 100 + c)) for c in range(4)]
        threads = [threading.Thread(target=c.run, args=(until,)) for c in clients]
        threads.append(threading.Thread(target=nemesis, args=(cluster, rng, until, log)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Healed: a final linearizable read of every key through every node.
        assert cluster.active(within=10) is not None, "no active node after healing"
        for node in cluster.nodes:
            for key in KEYS:
                op = wait_for(f"a read of {key} on {node.name}", lambda node=node, key=key: clients[0].read(node, key))
                history.append(op)

        result = check_campaign(history, log, f"cofferd campaign, {size} nodes, seed {seed}")
        assert result.ok, result.explanation
        # The link cuts did cut: each time the active node was cut off, another node became active.
        successors = [entry[1] for entry in log if entry[0] == "active while cut off"]
        assert successors and "none" not in successors, log
    finally:
        cluster.stop()
