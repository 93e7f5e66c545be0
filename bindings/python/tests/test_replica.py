"""An embedded replica from Python (issue 18, docs/raft.md): a libcoffer handle that joins a real cofferd
cluster as a learner and answers reads in process from its replica, while its writes go to the active
node. cofferd comes from $COFFERD (the Makefile passes the one `swift build` made)."""

import os
import shutil
import subprocess
import tempfile

import pytest

import coffer
from test_delivery import _call, _cofferd, _free_port, _wait_for


class ClusterNode:
    """One cofferd with storage "raft" (no retry_join: it founds the cluster at sys/init)."""

    def __init__(self, directory):
        self.directory = directory
        self.port, self.cluster_port = _free_port(), _free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(directory, "node.hcl")
        with open(self.config, "w") as f:
            f.write(f'storage "raft" {{\n  path = "{directory}/data"\n  node_id = "server-1"\n}}\n'
                    f'listener "tcp" {{ address = "127.0.0.1:{self.port}" tls_disable = true }}\n'
                    f'api_addr = "{self.addr}"\ncluster_addr = "127.0.0.1:{self.cluster_port}"\n')
        self.log = open(os.path.join(directory, "cofferd.log"), "ab")
        self.proc = subprocess.Popen([_cofferd(), f"-config={self.config}"], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

        def listening():
            assert self.proc.poll() is None, f"cofferd exited with {self.proc.returncode}"
            try:
                return _call(self.addr, "GET", "sys/seal-status")[0] == 200
            except OSError:
                return False

        _wait_for(listening, "cofferd to listen", timeout=60, interval=0.05)
        status, body = _call(self.addr, "PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        assert status == 200, body
        self.key, self.token = body["keys_base64"][0], body["root_token"]
        assert _call(self.addr, "PUT", "sys/unseal", {"key": self.key})[0] == 200
        _wait_for(lambda: _call(self.addr, "GET", "sys/leader")[1].get("is_self"), "the node to be active")
        assert _call(self.addr, "POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}},
                     token=self.token)[0] == 204

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def server():
    directory = tempfile.mkdtemp(prefix="coffer-replica-")
    node = ClusterNode(directory)
    yield node
    node.stop()
    shutil.rmtree(directory, ignore_errors=True)


def test_embedded_replica_reads_in_process_and_writes_through_the_active_node(server):
    status, _ = _call(server.addr, "POST", "secret/data/app", {"data": {"db": "pw-1"}}, token=server.token)
    assert status == 200
    directory = tempfile.mkdtemp(prefix="coffer-replica-lib-")
    config = {"storage": {"type": "raft", "path": directory, "node_id": "app-replica",
                          "cluster_addr": f"127.0.0.1:{_free_port()}", "retry_join": [server.addr]}}
    try:
        with coffer.open(config, token=server.token) as replica:
            # Shamir: the replica is given the unseal key, as any node is; it then proves to the active
            # node that it holds the vault's keys, is admitted as a learner, and receives the data.
            _wait_for(lambda: replica.request("GET", "sys/seal-status").body.get("t") == 1, "the join challenge")
            replica.request("PUT", "sys/unseal", {"key": server.key})
            _wait_for(lambda: not replica.request("GET", "sys/seal-status").body["sealed"], "the replica to unseal",
                      timeout=30)
            status, body = _call(server.addr, "GET", "sys/storage/raft/configuration", token=server.token)
            members = {s["node_id"]: s for s in body["data"]["config"]["servers"]}
            assert members["app-replica"]["voter"] is False and members["server-1"]["leader"] is True

            # Reads are answered in process, from the replica.
            assert replica.kv.get("app").data == {"db": "pw-1"}
            # A write goes to the active node; after replica_sync the replica has applied it.
            version = replica.kv.put("app", {"db": "pw-2"})
            assert version == 2
            assert _call(server.addr, "GET", "secret/data/app", token=server.token)[1]["data"]["data"] == {"db": "pw-2"}
            replica.replica_sync(timeout=5)
            assert replica.kv.get("app").data == {"db": "pw-2"}
            # A write made elsewhere reaches the replica by itself.
            _call(server.addr, "POST", "secret/data/other", {"data": {"k": "v"}}, token=server.token)
            _wait_for(lambda: _kv_or_none(replica, "other") == {"k": "v"}, "the replica to apply a write made elsewhere")
            # A denied write is denied by the active node, with its message.
            status, created = _call(server.addr, "POST", "auth/token/create", {"policies": ["default"]},
                                    token=server.token)
            weak = created["auth"]["client_token"]
            with pytest.raises(coffer.PermissionDeniedError):
                replica.kv.put("app", {"db": "nope"}, token=weak)

    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _kv_or_none(handle, path):
    try:
        return handle.kv.get(path).data
    except coffer.NotFoundError:
        return None
