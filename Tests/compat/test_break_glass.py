"""Break-glass access (issue 19 item 3, docs/break-glass.md) as an operator does it: the unmodified
bao CLI against cofferd -dev, a short time box, and the audit log read with plain file tools until
the token's expiry shows in it."""
import json
import os
import subprocess
import time

from conftest import run_bao, start_cofferd_dev

REQUESTER = 'path "sys/break-glass/activate/*" { capabilities = ["update"] }\n' \
            'path "sys/break-glass/claim/*" { capabilities = ["update"] }\n'
APPROVER = 'path "sys/break-glass/approve/*" { capabilities = ["update"] }\n' \
           'path "sys/break-glass/status/*" { capabilities = ["read"] }\n' \
           'path "sys/break-glass/pending/" { capabilities = ["list"] }\n'
EMERGENCY = 'path "secret/*" { capabilities = ["create", "read", "update"] }\n'


def records(path, needle=None, timeout=10):
    """The audit log's records, once `needle` is in the file (or after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        text = open(path).read() if os.path.exists(path) else ""
        if needle is None or needle in text or time.monotonic() > deadline:
            return [json.loads(line) for line in text.splitlines()]
        time.sleep(0.05)


def test_activate_use_and_watch_it_expire_in_the_audit_log(bao_bin, cofferd_bin, workdir):
    server = start_cofferd_dev(cofferd_bin)
    try:
        bao = lambda *a, **kw: run_bao(bao_bin, server.addr, *a, token=kw.pop("token", "root"), **kw)
        log = os.path.join(workdir, "audit.log")
        bao("audit", "enable", "file", f"file_path={log}")
        for name, text in (("oncall", REQUESTER), ("approver", APPROVER), ("emergency", EMERGENCY)):
            bao("policy", "write", name, "-", input=text)
        make_token = lambda policy: json.loads(
            bao("token", "create", f"-policy={policy}", "-format=json")[1])["auth"]["client_token"]
        oncall = make_token("oncall")

        # Bad input is refused with a message that says what is wrong, and nothing is made.
        code, _, err = bao("write", "sys/break-glass/config/db", "policies=emergency",
                           "requester_policies=oncall", check=False)
        assert code == 2 and "max_ttl is required" in err, err
        _, out, _ = bao("write", "sys/break-glass/config/db", "policies=emergency", "max_ttl=3s",
                        "requester_policies=oncall")
        assert "Success" in out
        code, _, err = bao("write", "sys/break-glass/activate/db", "reason=", token=oncall, check=False)
        assert code == 2 and "reason is required" in err, err
        code, _, err = bao("write", "sys/break-glass/activate/db", "reason=x", "ttl=1h", token=oncall, check=False)
        assert code == 2 and "longer than the time box" in err, err
        code, _, err = bao("write", "sys/break-glass/activate/db", "reason=x", token=make_token("approver"),
                           check=False)
        assert code == 2 and "permission denied" in err, err
        code, _, err = bao("write", "sys/break-glass/activate/nope", "reason=x", token=oncall, check=False)
        assert code == 2 and "no break-glass configuration named" in err, err

        # Activate: a token at once, boxed to 3 s, not renewable.
        _, out, _ = bao("write", "-format=json", "sys/break-glass/activate/db",
                        "reason=INC-42 database down", token=oncall)
        answer = json.loads(out)
        glass = answer["auth"]["client_token"]
        request_id = answer["data"]["request_id"]
        assert answer["auth"]["lease_duration"] == 3 and answer["auth"]["renewable"] is False
        assert answer["auth"]["metadata"]["break_glass_id"] == request_id
        bao("kv", "put", "secret/app", "password=from-break-glass", token=glass)
        code, _, err = bao("token", "renew", token=glass, check=False)
        assert code == 2 and "cannot be renewed" in err, err

        # Its use carries the marker; its expiry shows in the log though no request causes it.
        expiry_path = f"sys/break-glass/expire/{request_id}"
        logged = records(log, expiry_path)
        marked = [r for r in logged if r.get("break_glass", {}).get("id") == request_id]
        assert any(r["request"]["path"] == "secret/data/app" for r in marked), marked
        expired = [r for r in marked if r["request"]["path"] == expiry_path]
        assert expired and expired[0]["break_glass"]["event"] == "expired", logged[-4:]
        for r in marked:
            assert r["auth"]["metadata"]["break_glass_id"] == request_id
        assert glass not in open(log).read()
        # The marker and the expiry record are in the hash chain like every other line.
        _, key, _ = bao("read", "-field=key", "sys/audit-chain-key/file")
        cli = os.environ.get("COFFER_CLI") or os.path.join(os.path.dirname(cofferd_bin), "coffer-cli")
        verified = subprocess.run([cli, "audit", "verify", "--key", key.strip(), log], capture_output=True, text=True)
        assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stdout + verified.stderr
        code, _, err = bao("kv", "get", "secret/app", token=glass, check=False)
        assert code == 2 and "permission denied" in err

        # The report says who, why, when, and what was done.
        _, out, _ = bao("read", "-format=json", f"sys/break-glass/report/{request_id}")
        report = json.loads(out)["data"]
        assert report["status"] == "expired" and report["reason"] == "INC-42 database down"
        assert any(u["path"] == "secret/data/app" and u["status"] == 200 for u in report["requests"]), report
        assert report["request_count"] == len(report["requests"])
        _, out, _ = bao("read", "-format=json", "sys/events/recent", "type=break-glass/")
        types = [e["event_type"] for e in json.loads(out)["data"]["events"]]
        assert types[0] == "break-glass/activated" and types[-1] == "break-glass/expired", types
        assert "break-glass/used" in types
    finally:
        server.stop()


def test_approval_flow_with_the_cli(bao_bin, cofferd_bin):
    server = start_cofferd_dev(cofferd_bin)
    try:
        bao = lambda *a, **kw: run_bao(bao_bin, server.addr, *a, token=kw.pop("token", "root"), **kw)
        for name, text in (("oncall", REQUESTER), ("approver", APPROVER), ("emergency", EMERGENCY)):
            bao("policy", "write", name, "-", input=text)
        make_token = lambda policy: json.loads(
            bao("token", "create", f"-policy={policy}", "-format=json")[1])["auth"]["client_token"]
        oncall, second = make_token("oncall"), make_token("approver")
        # An approver who may also call claim (so the ACL lets the call through to the requester check).
        _, out, _ = bao("token", "create", "-policy=approver", "-policy=oncall", "-format=json")
        first = json.loads(out)["auth"]["client_token"]
        bao("write", "sys/break-glass/config/db", "policies=emergency", "max_ttl=2m", "requester_policies=oncall",
            "approvals_required=2", "approver_policies=approver")

        _, out, _ = bao("write", "-format=json", "sys/break-glass/activate/db", "reason=INC-43", token=oncall)
        answer = json.loads(out)
        assert answer.get("auth") is None and answer["data"]["status"] == "pending"
        request_id = answer["data"]["request_id"]
        _, out, _ = bao("list", "-format=json", "sys/break-glass/pending", token=second)
        assert json.loads(out) == [request_id]
        bao("write", "-force", f"sys/break-glass/approve/{request_id}", token=first)
        code, _, err = bao("write", "-force", f"sys/break-glass/approve/{request_id}", token=first, check=False)
        assert code == 2 and "already approved" in err, err
        code, _, err = bao("write", "-force", f"sys/break-glass/claim/{request_id}", token=oncall, check=False)
        assert code == 2 and "1 of 2" in err, err
        bao("write", "-force", f"sys/break-glass/approve/{request_id}", token=second)
        code, _, err = bao("write", "-force", f"sys/break-glass/claim/{request_id}", token=first, check=False)
        assert code == 2 and "only the requester" in err, err
        _, out, _ = bao("write", "-format=json", "-force", f"sys/break-glass/claim/{request_id}", token=oncall)
        auth = json.loads(out)["auth"]
        assert auth["lease_duration"] == 120 and auth["policies"] == ["default", "emergency"]
        code, _, err = bao("write", "-force", f"sys/break-glass/claim/{request_id}", token=oncall, check=False)
        assert code == 2 and "already claimed" in err, err
        _, out, _ = bao("read", "-format=json", f"sys/break-glass/status/{request_id}", token=first)
        status = json.loads(out)["data"]
        assert status["status"] == "active" and len(status["approvers"]) == 2
    finally:
        server.stop()
