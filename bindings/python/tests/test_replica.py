"""An embedded replica from Python (issue 18, docs/raft.md): a libcoffer handle that joins a real cofferd
cluster as a learner and answers reads in process from its replica, while its writes go to the active
node. cofferd comes from $COFFERD (the Makefile passes the one `swift build` made). The same from C:
bindings/c/replica.c, run as a program against the same cofferd (the Makefile passes the one bindings/c built
as $COFFER_C_REPLICA; without it the test compiles it)."""

import os
import re
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


# ---- The C program (bindings/c/replica.c) ------------------------------------------------------------------

VALGRIND = ["valgrind", "-q", "--fair-sched=yes", "--leak-check=full", "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
            "--error-exitcode=99"]  # as bindings/c/Makefile runs the example


@pytest.fixture(scope="module")
def replica_program():
    """bindings/c/replica.c built: $COFFER_C_REPLICA (bindings/c's Makefile built it), or compiled here against
    the library the binding loaded and the repository's header, as strictly as the Makefile compiles."""
    built = os.environ.get("COFFER_C_REPLICA")
    if built:
        yield built
        return
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", "..", ".."))
    library = os.path.realpath(coffer.library_path())
    directory = tempfile.mkdtemp(prefix="coffer-replica-c-")
    program = os.path.join(directory, "replica")
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", f"-I{root}/include",
                    os.path.join(root, "bindings", "c", "replica.c"), library,
                    f"-Wl,-rpath,{os.path.dirname(library)}", "-o", program], check=True)
    yield program
    shutil.rmtree(directory, ignore_errors=True)


def _program_env(**values):
    """The environment of the program: the library's directory on its path, and `values` (and no COFFER_TOKEN,
    COFFER_UNSEAL_KEY or COFFER_NODE_ID of this process's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COFFER_TOKEN", "COFFER_UNSEAL_KEY", "COFFER_NODE_ID")}
    env["LD_LIBRARY_PATH"] = os.path.dirname(os.path.realpath(coffer.library_path()))
    return {**env, **values}


def _run_replica(program, server, directory, token, cluster_addr=None, secret=None, wrapper=()):
    """Runs the program as its header comment says; returns (exit status, stdout, stderr, pid)."""
    env = _program_env(COFFER_TOKEN=token, COFFER_UNSEAL_KEY=server.key, COFFER_NODE_ID="c-replica")
    proc = subprocess.Popen([*wrapper, program, server.addr, cluster_addr or f"127.0.0.1:{_free_port()}",
                             directory, *([secret] if secret else [])], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"replica did not finish in 240 s; stdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err, proc.pid


def test_c_replica_reads_in_process_writes_through_the_active_node_and_reads_its_write_back(server, replica_program):
    status, _ = _call(server.addr, "POST", "secret/data/app/config", {"data": {"db": "pw-1"}}, token=server.token)
    assert status == 200
    directory = tempfile.mkdtemp(prefix="coffer-replica-c-data-")
    try:
        cluster_addr = f"127.0.0.1:{_free_port()}"
        code, out, err, pid = _run_replica(replica_program, server, directory, server.token, cluster_addr)
        assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
        assert re.search(r"unsealed and caught up at index \d+; the active node is " + re.escape(server.addr), out)
        assert 'read secret/app/config version 1 in process: {"db":"pw-1"}' in out
        assert "wrote secret/app/from-c version 1 through the active node" in out
        assert f'read back secret/app/from-c version 1 in process: {{"pid":"{pid}","written_by":"replica.c"}}' in out
        assert out.rstrip().endswith("closed")
        # What it wrote is the cluster's: the active node answers it over HTTP.
        status, body = _call(server.addr, "GET", "secret/data/app/from-c", token=server.token)
        assert status == 200 and body["data"]["data"] == {"pid": str(pid), "written_by": "replica.c"}
        status, body = _call(server.addr, "GET", "sys/storage/raft/configuration", token=server.token)
        members = {s["node_id"]: s for s in body["data"]["config"]["servers"]}
        assert members["c-replica"]["voter"] is False

        # Run again on the same directory (and Raft port), reading what the first run wrote: the replica
        # reopens its copy, is unsealed again and carries on.
        first = pid
        code, out, err, pid = _run_replica(replica_program, server, directory, server.token, cluster_addr,
                                           secret="app/from-c")
        assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
        assert f'read secret/app/from-c version 1 in process: {{"pid":"{first}","written_by":"replica.c"}}' in out
        assert f'read back secret/app/from-c version 2 in process: {{"pid":"{pid}","written_by":"replica.c"}}' in out
        assert _call(server.addr, "GET", "secret/data/app/from-c", token=server.token)[1]["data"]["metadata"][
            "version"] == 2

        # And on a new Raft port (a container restarted elsewhere): the cluster still dials the old one, so
        # the replica proves again, through the active node's API, that it holds the keys, and is dialled
        # at the new address; its own write then reaches it.
        second = pid
        moved = f"127.0.0.1:{_free_port()}"
        code, out, err, pid = _run_replica(replica_program, server, directory, server.token, moved,
                                           secret="app/from-c")
        assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
        assert f'read back secret/app/from-c version 3 in process: {{"pid":"{pid}","written_by":"replica.c"}}' in out
        status, body = _call(server.addr, "GET", "sys/storage/raft/configuration", token=server.token)
        members = {s["node_id"]: s for s in body["data"]["config"]["servers"]}
        assert members["c-replica"]["address"] == moved and members["c-replica"]["voter"] is False
        assert second != pid
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_c_replica_prints_the_active_nodes_refusal_and_exits_non_zero(server, replica_program):
    _call(server.addr, "POST", "secret/data/app/config", {"data": {"db": "pw-1"}}, token=server.token)
    policy = 'path "secret/data/app/config" { capabilities = ["read"] }'
    assert _call(server.addr, "PUT", "sys/policies/acl/reader", {"policy": policy}, token=server.token)[0] == 204
    status, created = _call(server.addr, "POST", "auth/token/create", {"policies": ["reader"]}, token=server.token)
    reader = created["auth"]["client_token"]
    directory = tempfile.mkdtemp(prefix="coffer-replica-c-data-")
    try:
        code, out, err, _ = _run_replica(replica_program, server, directory, reader)
        # The token may read (in process) but not write: the active node refuses the write, with its message.
        assert code == 1, f"stdout:\n{out}\nstderr:\n{err}"
        assert 'read secret/app/config version 1 in process: {"db":"pw-1"}' in out
        assert "wrote" not in out
        assert err.startswith("write: ") and "(permission denied)" in err
        assert _call(server.addr, "GET", "secret/data/app/from-c", token=server.token)[0] == 404
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    # Without a token it says how it is run.
    proc = subprocess.run([replica_program, server.addr, "127.0.0.1:1", directory], capture_output=True, text=True,
                          env=_program_env(COFFER_UNSEAL_KEY=server.key))
    assert proc.returncode == 2 and proc.stderr.startswith("usage: COFFER_TOKEN=... COFFER_UNSEAL_KEY=... ")


def test_c_replica_is_valgrind_clean(server, replica_program):
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (make deps installs it)")
    _call(server.addr, "POST", "secret/data/app/config", {"data": {"db": "pw-1"}}, token=server.token)
    directory = tempfile.mkdtemp(prefix="coffer-replica-c-data-")
    try:
        # 99: valgrind found a memory error or a definite leak (its report is on stderr).
        code, out, err, pid = _run_replica(replica_program, server, directory, server.token, wrapper=VALGRIND)
        assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
        assert f'read back secret/app/from-c version 1 in process: {{"pid":"{pid}","written_by":"replica.c"}}' in out
    finally:
        shutil.rmtree(directory, ignore_errors=True)
