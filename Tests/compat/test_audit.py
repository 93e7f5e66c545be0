"""The audit issue's "done when", as a new user does it: the unmodified bao CLI against cofferd -dev,
then the log read with plain file tools and checked with `coffer audit verify`."""
import json
import os
import shutil
import subprocess
import time

from conftest import run_bao, start_cofferd_dev

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
