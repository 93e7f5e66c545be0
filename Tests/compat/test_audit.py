"""The audit issue's "done when", as a new user does it: the unmodified bao CLI against cofferd -dev,
then the log read with plain file tools and checked with `coffer audit verify`."""
import json
import os
import re
import shutil
import subprocess
import time

import requests

from conftest import run_bao, start_cofferd_config, start_cofferd_dev

SECRET = "hunter2-done-when"


def coffer_cli(cofferd_bin):
    path = os.environ.get("COFFER_CLI") or os.path.join(os.path.dirname(cofferd_bin), "coffer-cli")
    assert os.access(path, os.X_OK), f"coffer-cli not found at {path} (swift build --product coffer-cli)"
    return path


def wait_for(path, needle, timeout=5):
    """The log's text once it contains `needle`: a read's records reach the file from the device's
    writer thread, within about a millisecond."""
    deadline = time.monotonic() + timeout
    while True:
        text = open(path).read() if os.path.exists(path) else ""
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.01)


def test_enable_operate_read_verify_tamper_and_fail_closed(bao_bin, cofferd_bin, workdir):
    server = start_cofferd_dev(cofferd_bin)
    try:
        logs = os.path.join(workdir, "logs")
        os.mkdir(logs)
        log = os.path.join(logs, "audit.log")
        bao = lambda *args, **kw: run_bao(bao_bin, server.addr, *args, token=kw.pop("token", "root"), **kw)

        _, out, _ = bao("audit", "enable", "file", f"file_path={log}")
        assert "Success! Enabled the file audit device at: file/" in out
        _, out, _ = bao("audit", "list", "-format=json")
        assert json.loads(out)["file/"]["type"] == "file"
        bao("kv", "put", "secret/app", f"password={SECRET}")
        _, out, _ = bao("kv", "get", "-field=password", "secret/app")
        assert out.strip() == SECRET
        _, out, _ = bao("token", "create", "-policy=default", "-format=json")
        new_token = json.loads(out)["auth"]["client_token"]

        text = wait_for(log, '"type":"response"}')
        text = wait_for(log, "auth/token/create")
        assert oct(os.stat(log).st_mode & 0o777) == "0o600"
        records = [json.loads(line) for line in text.splitlines()]
        paths = {(r["type"], r["request"]["path"]) for r in records}
        assert ("request", "secret/data/app") in paths and ("response", "secret/data/app") in paths
        for needle in (SECRET, new_token, new_token[2:]):
            assert needle not in text, f"{needle[:6]}... reached the audit log"
        # An operator finds the secret's records by hashing the value they know.
        _, out, _ = bao("write", "-field=hash", "sys/audit-hash/file", f"input={SECRET}")
        assert out.strip().startswith("hmac-sha256:") and out.strip() in text

        # The chain verifies; an edited line is named.
        _, key, _ = bao("read", "-field=key", "sys/audit-chain-key/file")
        cli = coffer_cli(cofferd_bin)
        intact = subprocess.run([cli, "audit", "verify", "--key", key.strip(), log], capture_output=True, text=True)
        assert intact.returncode == 0 and "chain intact" in intact.stdout, intact.stdout + intact.stderr
        lines = open(log).read().splitlines()
        lines[2] = lines[2].replace('"operation":"', '"operation":"x', 1)
        edited = os.path.join(workdir, "edited.log")
        with open(edited, "w") as f:
            f.write("\n".join(lines) + "\n")
        tampered = subprocess.run([cli, "audit", "verify", "--key", key.strip(), edited], capture_output=True, text=True)
        assert tampered.returncode == 1 and "line 3" in tampered.stdout + tampered.stderr

        # The only device's directory is removed: writes are refused with a clear error and not applied.
        shutil.rmtree(logs)
        code, _, err = bao("kv", "put", "secret/app", "password=changed", check=False)
        assert code == 2 and "no audit device could record the request, so it was not processed" in err, err
        assert log in err
        os.mkdir(logs)
        _, out, _ = bao("kv", "get", "-field=password", "secret/app")
        assert out.strip() == SECRET
    finally:
        server.stop()


def api(server, method, path, token="root", **kw):
    headers = {"X-Vault-Token": token} if token else {}
    return requests.request(method, f"{server.addr}/v1/{path}", headers=headers, timeout=10, **kw)


def errors(response):
    try:
        return " ".join(response.json().get("errors", []))
    except ValueError:
        return response.text


def dev_unseal_key(server):
    deadline = time.monotonic() + 20
    while not (match := re.search(r"Unseal Key: (\S+)", server.output())):
        assert time.monotonic() < deadline, "cofferd -dev did not print its unseal key"
        time.sleep(0.05)
    return match.group(1)


def verify(cofferd_bin, key, path):
    p = subprocess.run([coffer_cli(cofferd_bin), "audit", "verify", "--key", key, path], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def test_seal_and_disabling_the_last_device_answer_204(bao_bin, cofferd_bin, workdir):
    """Issue 13 item 8: both were 500 "the request was processed but no audit device could record the
    response" although they had been done. OpenBao answers 204 to both."""
    server = start_cofferd_dev(cofferd_bin)
    try:
        log = os.path.join(workdir, "audit.log")
        bao = lambda *args, **kw: run_bao(bao_bin, server.addr, *args, token=kw.pop("token", "root"), **kw)
        assert api(server, "PUT", "sys/audit/file", json={"type": "file", "options": {"file_path": log}}).status_code == 204
        key = api(server, "GET", "sys/audit-chain-key/file").json()["data"]["key"]

        r = api(server, "PUT", "sys/seal")
        assert r.status_code == 204, r.text
        assert api(server, "GET", "sys/seal-status", token=None).json()["sealed"] is True
        seal = [json.loads(line) for line in open(log) if '"path":"sys/seal"' in line]
        assert [s["type"] for s in seal] == ["request", "response"] and seal[1]["response"]["status"] == 204

        # The same through the bao CLI, after unsealing (the device reopens the same file).
        unseal_key = dev_unseal_key(server)
        bao("operator", "unseal", unseal_key, token=None)
        bao("kv", "put", "secret/app", "k=v")
        _, out, _ = bao("operator", "seal")
        assert "Success! Vault is sealed." in out
        bao("operator", "unseal", unseal_key, token=None)

        # Disabling the last device: 204, gone, and its log ends with the disable's response.
        r = api(server, "DELETE", "sys/audit/file")
        assert r.status_code == 204, r.text
        assert api(server, "GET", "sys/audit").json()["data"] == {}
        last = [json.loads(line) for line in open(log)][-2:]
        assert [(x["type"], x["request"]["path"]) for x in last] == [("request", "sys/audit/file"), ("response", "sys/audit/file")]
        assert last[1]["response"]["status"] == 204
        size = os.path.getsize(log)
        bao("kv", "put", "secret/app", "k=w")
        assert os.path.getsize(log) == size, "a disabled device records nothing"

        code, text = verify(cofferd_bin, key, log)
        assert code == 0 and "chain intact" in text, text
    finally:
        server.stop()


def test_what_file_path_may_name(bao_bin, cofferd_bin, workdir):
    """Issue 13 item 9: the file device no longer chmods whatever file_path names; what it cannot or
    must not open is a 400 naming the problem when the device is enabled."""
    server = start_cofferd_dev(cofferd_bin)
    try:
        enable = lambda name, **options: api(server, "PUT", f"sys/audit/{name}", json={"type": "file", "options": options})

        r = enable("d", file_path=workdir)
        assert r.status_code == 400 and "directory" in errors(r), r.text
        r = enable("m", file_path=os.path.join(workdir, "missing", "audit.log"))
        assert r.status_code == 400 and "does not exist" in errors(r), r.text
        before = os.stat("/dev/null").st_mode
        r = enable("n", file_path="/dev/null")
        assert r.status_code == 400 and "device file" in errors(r) and "discard" in errors(r), r.text
        assert os.stat("/dev/null").st_mode == before
        r = enable("x", file_path=os.path.join(workdir, "x.log"), mode="0755")
        assert r.status_code == 400 and "executable" in errors(r) and "0755" not in errors(r), r.text
        assert not os.path.exists(os.path.join(workdir, "x.log"))

        outside = os.path.join(workdir, "outside")
        logs = os.path.join(workdir, "logs")
        os.mkdir(outside)
        os.mkdir(logs)
        victim = os.path.join(outside, "victim")
        with open(victim, "w") as f:
            f.write("keep me\n")
        os.chmod(victim, 0o644)
        os.symlink("../outside/victim", os.path.join(logs, "audit.log"))
        r = enable("l", file_path=os.path.join(logs, "audit.log"))
        assert r.status_code == 400 and "symbolic link" in errors(r), r.text
        assert open(victim).read() == "keep me\n" and os.stat(victim).st_mode & 0o777 == 0o644

        # The bao CLI shows the 400 and its reason.
        code, _, err = run_bao(bao_bin, server.addr, "audit", "enable", "-path=cli", "file", f"file_path={workdir}",
                               token="root", check=False)
        assert code == 2 and "Code: 400" in err and "directory" in err, err

        r = enable("mode", file_path=os.path.join(workdir, "a.log"), mode="0640")
        assert r.status_code == 204, r.text
        assert os.stat(os.path.join(workdir, "a.log")).st_mode & 0o777 == 0o640

        # stdout: the records are in cofferd's output; discard: accepted, nothing written anywhere.
        assert enable("out", file_path="stdout").status_code == 204
        assert enable("drop", file_path="discard").status_code == 204
        assert api(server, "PUT", "secret/data/to-stdout", json={"data": {"v": SECRET}}).status_code == 200
        deadline = time.monotonic() + 5
        while '"path":"secret/data/to-stdout"' not in server.output() and time.monotonic() < deadline:
            time.sleep(0.01)
        printed = [line for line in server.output().splitlines() if '"path":"secret/data/to-stdout"' in line]
        assert len(printed) == 2 and all(json.loads(line)["type"] in ("request", "response") for line in printed)
        assert SECRET not in server.output()
    finally:
        server.stop()


CONFIG = """
storage "sqlite" {{ path = "{dir}/coffer.db" }}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
"""


def test_a_torn_last_line_is_told_from_an_edit(cofferd_bin, workdir):
    """Issue 13 item 10: power loss in the middle of the last record. After a restart the device ends
    the torn line, marks it with a record of its own and goes on; verify reports the tear, and still
    reports an edit elsewhere as tampering."""
    log = os.path.join(workdir, "audit.log")
    server = start_cofferd_config(cofferd_bin, CONFIG, workdir)
    try:
        init = api(server, "PUT", "sys/init", token=None, json={"secret_shares": 1, "secret_threshold": 1}).json()
        unseal_key, root = init["keys"][0], init["root_token"]
        assert api(server, "PUT", "sys/unseal", token=None, json={"key": unseal_key}).json()["sealed"] is False
        assert api(server, "POST", "sys/mounts/secret", token=root, json={"type": "kv", "options": {"version": "2"}}).status_code == 204
        assert api(server, "PUT", "sys/audit/file", token=root, json={"type": "file", "options": {"file_path": log}}).status_code == 204
        key = api(server, "GET", "sys/audit-chain-key/file", token=root).json()["data"]["key"]
        for i in range(3):
            assert api(server, "PUT", f"secret/data/t{i}", token=root, json={"data": {"v": i}}).status_code == 200
        assert server.stop() == 0

        with open(log, "rb") as f:
            complete = f.read().count(b"\n")
        os.truncate(log, os.path.getsize(log) - 40)  # the power goes off in the middle of the last record
        code, text = verify(cofferd_bin, key, log)
        assert code == 0 and f"line {complete} is incomplete" in text, text

        server = start_cofferd_config(cofferd_bin, CONFIG, workdir, addr=server.hostport)
        assert api(server, "PUT", "sys/unseal", token=None, json={"key": unseal_key}).json()["sealed"] is False
        for i in range(2):
            assert api(server, "PUT", f"secret/data/after{i}", token=root, json={"data": {"v": i}}).status_code == 200
        assert server.stop() == 0

        code, text = verify(cofferd_bin, key, log)
        assert code == 0 and f"torn record at line {complete}" in text and "TAMPERED" not in text, text
        lines = open(log).read().split("\n")
        marks = [json.loads(line) for line in lines if line.startswith("{") and '"type":"torn"' in line]
        assert len(marks) == 1 and marks[0]["torn"]["bytes"] == len(lines[complete - 1].encode())

        target = next(i for i, line in enumerate(lines) if '"path":"secret/data/t0"' in line)
        lines[target] = lines[target].replace("secret/data/t0", "secret/data/tX")
        edited = os.path.join(workdir, "edited.log")
        with open(edited, "w") as f:
            f.write("\n".join(lines))
        code, text = verify(cofferd_bin, key, edited)
        assert code == 1 and f"TAMPERED at line {target + 1}" in text, text
    finally:
        server.stop()
