"""Deeply nested input against a real cofferd (issue 13 item 1): a policy or a body nested past the
limit is a 400 naming where, a configuration file nested past it is a startup error naming the line,
and the server lives on. Before the limits, the policy below killed cofferd with SIGSEGV."""
import json
import os
import subprocess

import requests

from conftest import start_cofferd_dev

ROOT = {"X-Vault-Token": "root"}
HCL_LIMIT = 64  # HCLReader.maximumDepth: policies and the configuration file
JSON_LIMIT = 256  # JSONValue.maximumDepth: request bodies
BRACKET_BOMB = 'path "a" { x = ' + "[" * 20000
BLOCK_BOMB = 'path "a" ' + "{ x " * 10000


def test_deep_policies_and_bodies_are_400s_and_the_server_lives_on(cofferd_bin):
    server = start_cofferd_dev(cofferd_bin)
    try:
        a = server.addr + "/v1/"
        for name, text, column in [
            ("lists", BRACKET_BOMB, len('path "a" { x = ') + HCL_LIMIT),
            ("blocks", BLOCK_BOMB, len('path "a" ') + 4 * HCL_LIMIT + 1),
        ]:
            r = requests.put(a + f"sys/policies/acl/{name}", json={"policy": text}, headers=ROOT, timeout=30)
            assert r.status_code == 400, r.text[:300]
            message = r.json()["errors"][0]
            assert f"line 1, column {column}" in message and "nest too deeply" in message, message
            assert "[[" not in message and "{ x" not in message
            assert server.proc.poll() is None
        # The legacy endpoint and a JSON body nested past the limit.
        r = requests.put(a + "sys/policy/legacy", json={"rules": BRACKET_BOMB}, headers=ROOT, timeout=30)
        assert r.status_code == 400, r.text[:300]
        body = '{"data":' + "[" * 50000
        r = requests.put(a + "secret/data/deep", data=body, headers=ROOT, timeout=30)
        assert r.status_code == 400 and f"nesting deeper than {JSON_LIMIT}" in r.json()["errors"][0], r.text[:300]
        # Still serving, nothing stored.
        assert requests.get(a + "sys/health", timeout=10).status_code == 200
        assert requests.get(a + "sys/policies/acl/lists", headers=ROOT, timeout=10).status_code == 404
        r = requests.put(a + "secret/data/deep", json={"data": json.loads('{"a":' * 200 + "1" + "}" * 200)},
                         headers=ROOT, timeout=30)
        assert r.status_code == 200, r.text[:300]
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_a_configuration_nested_too_deeply_is_a_startup_error(cofferd_bin, workdir):
    path = os.path.join(workdir, "deep.hcl")
    with open(path, "w") as f:
        f.write('storage "memory" {}\nlistener "tcp" {\n  address = ' + "[" * 20000 + "\n}\n")
    p = subprocess.run([cofferd_bin, f"-config={path}"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, (p.returncode, p.stderr[-500:])
    assert "line 3" in p.stderr and "nest too deeply" in p.stderr, p.stderr[-500:]
