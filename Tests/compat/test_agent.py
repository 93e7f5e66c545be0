"""`coffer agent` (cofferd's agent mode) with real processes: AppRole auto-auth against a real cofferd,
the unmodified bao CLI and hvac pointed at the agent with no token of their own, and a cached secret
still served after cofferd is killed. docs/run-and-agent.md."""
import os
import signal
import stat
import subprocess
import time

import hvac
import pytest
import requests

from authtools import SigningKey, claims
from conftest import Server, free_port, run_bao, start_cofferd_dev

POLICY = 'path "secret/data/*" { capabilities = ["create", "read", "update"] }\n'


@pytest.fixture(scope="session")
def coffer_cli(cofferd_bin):
    path = os.environ.get("COFFER_CLI") or os.path.join(os.path.dirname(cofferd_bin), "coffer-cli")
    assert os.access(path, os.X_OK), f"coffer-cli not found at {path} (swift build --product coffer-cli)"
    return path


def approle(bao_bin, addr, workdir, ttl="token_ttl=1h"):
    """An AppRole `app` with read/write on secret/data/*; its role ID and a secret ID in files."""
    run_bao(bao_bin, addr, "auth", "enable", "approle", token="root")
    run_bao(bao_bin, addr, "policy", "write", "app", "-", input=POLICY, token="root")
    run_bao(bao_bin, addr, "write", "auth/approle/role/app", "token_policies=app", *ttl.split(), token="root")
    _, role_id, _ = run_bao(bao_bin, addr, "read", "-field=role_id", "auth/approle/role/app/role-id", token="root")
    _, secret_id, _ = run_bao(bao_bin, addr, "write", "-f", "-field=secret_id", "auth/approle/role/app/secret-id",
                              token="root")
    paths = []
    for name, value in (("role-id", role_id), ("secret-id", secret_id)):
        path = os.path.join(workdir, name)
        with open(path, "w") as f:
            f.write(value.strip() + "\n")
        paths.append(path)
    return paths


AGENT_CONFIG = """
vault {{ address = "{upstream}" }}
auto_auth {{
  method "approle" {{
    mount_path = "auth/approle"
    config {{
      role_id_file_path   = "{role_id}"
      secret_id_file_path = "{secret_id}"
    }}
  }}
  sink "file" {{ config {{ path = "{sink}"  mode = 0640 }} }}
}}
api_proxy {{ use_auto_auth_token = true }}
cache {{
  default_ttl = "{ttl}"
  {cache_extra}
}}
listener "tcp" {{
  address     = "{listen}"
  tls_disable = true
}}
"""


def start_agent(coffer_cli, workdir, upstream, role_id, secret_id, ttl="0s", cache_extra=""):
    listen = f"127.0.0.1:{free_port()}"
    sink = os.path.join(workdir, "agent-token")
    path = os.path.join(workdir, "agent.hcl")
    with open(path, "w") as f:
        f.write(AGENT_CONFIG.format(upstream=upstream, role_id=role_id, secret_id=secret_id, sink=sink, ttl=ttl,
                                    cache_extra=cache_extra, listen=listen))
    # Server waits until GET /v1/sys/seal-status answers (forwarded upstream).
    return Server([coffer_cli, "agent", f"-config={path}"], listen), sink


def test_bao_and_hvac_read_through_the_agent_and_from_its_cache_when_cofferd_is_killed(
        coffer_cli, cofferd_bin, bao_bin, workdir):
    server = start_cofferd_dev(cofferd_bin)
    agent = None
    try:
        role_id, secret_id = approle(bao_bin, server.addr, workdir)
        run_bao(bao_bin, server.addr, "kv", "put", "secret/app", "password=through-the-agent", token="root")
        agent, sink = start_agent(coffer_cli, workdir, server.addr, role_id, secret_id)

        # The bao CLI with no token of its own (run_bao sets none): the agent's AppRole token is used.
        _, out, _ = run_bao(bao_bin, agent.addr, "kv", "get", "-field=password", "secret/app")
        assert out.strip() == "through-the-agent"
        # hvac with no token (token="" so that it does not take ~/.vault-token or VAULT_TOKEN): the
        # agent's token answers its lookup-self, with the app role's policy.
        client = hvac.Client(url=agent.addr, token="")
        read = client.secrets.kv.v2.read_secret_version(path="app", raise_on_deleted_version=True)
        assert read["data"]["data"]["password"] == "through-the-agent"
        assert "app" in client.auth.token.lookup_self()["data"]["policies"]

        # The token sink: the agent's token, mode 0640, a token the upstream knows as the app role's.
        assert stat.S_IMODE(os.stat(sink).st_mode) == 0o640
        token = open(sink).read().strip()
        lookup = requests.get(server.addr + "/v1/auth/token/lookup-self", headers={"X-Vault-Token": token}, timeout=10)
        assert lookup.status_code == 200 and "app" in lookup.json()["data"]["policies"]

        # A write through the agent reaches cofferd and the next read through the agent sees it.
        run_bao(bao_bin, agent.addr, "kv", "put", "secret/app", "password=written-via-agent")
        _, out, _ = run_bao(bao_bin, server.addr, "kv", "get", "-field=password", "secret/app", token="root")
        assert out.strip() == "written-via-agent"
        _, out, _ = run_bao(bao_bin, agent.addr, "kv", "get", "-field=password", "secret/app")
        assert out.strip() == "written-via-agent"

        # A client's own token is forwarded as it is: a bad one is refused upstream.
        code, _, err = run_bao(bao_bin, agent.addr, "kv", "get", "secret/app", token="s.not-a-token", check=False)
        assert code != 0 and "permission denied" in err

        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        _, out, _ = run_bao(bao_bin, agent.addr, "kv", "get", "-field=password", "secret/app")
        assert out.strip() == "written-via-agent"
        read = client.secrets.kv.v2.read_secret_version(path="app", raise_on_deleted_version=True)
        assert read["data"]["data"]["password"] == "written-via-agent"
        stale = requests.get(agent.addr + "/v1/secret/data/app", timeout=10)
        assert stale.headers.get("X-Coffer-Cache") == "stale"
        # Nothing cached for it: the upstream's absence is an error, not an empty answer.
        code, _, err = run_bao(bao_bin, agent.addr, "kv", "get", "secret/never-read", check=False)
        assert code != 0 and "could not reach the upstream" in err
    finally:
        if agent:
            agent.stop()
        server.stop()


def test_cache_hits_within_the_ttl(coffer_cli, cofferd_bin, bao_bin, workdir):
    server = start_cofferd_dev(cofferd_bin)
    agent = None
    try:
        role_id, secret_id = approle(bao_bin, server.addr, workdir)
        run_bao(bao_bin, server.addr, "kv", "put", "secret/app", "password=v1", token="root")
        run_bao(bao_bin, server.addr, "kv", "put", "secret/live/feed", "level=1", token="root")
        agent, _ = start_agent(coffer_cli, workdir, server.addr, role_id, secret_id, ttl="1h",
                               cache_extra='prefix_ttl = { "secret/data/live/" = "0s" }')
        first = requests.get(agent.addr + "/v1/secret/data/app", timeout=10)
        second = requests.get(agent.addr + "/v1/secret/data/app", timeout=10)
        assert first.headers["X-Coffer-Cache"] == "miss" and second.headers["X-Coffer-Cache"] == "hit"
        assert second.json()["data"]["data"] == {"password": "v1"}
        # The longest matching prefix_ttl wins over default_ttl: secret/data/live/ is never served from the cache.
        for _ in range(2):
            live = requests.get(agent.addr + "/v1/secret/data/live/feed", timeout=10)
            assert live.headers["X-Coffer-Cache"] == "miss" and live.json()["data"]["data"] == {"level": "1"}
        # Another token's reads are its own: the root token gets the upstream's answer, not the cached one.
        other = requests.get(agent.addr + "/v1/secret/data/app", headers={"X-Vault-Token": "root"}, timeout=10)
        assert other.headers["X-Coffer-Cache"] == "miss"
    finally:
        if agent:
            agent.stop()
        server.stop()


@pytest.mark.parametrize("text, message", [
    ('listener "tcp" {\n  address = "127.0.0.1:1"\n  tls_disable = true\n  tls_cert_file = "x"\n}\n',
     'line 4: unknown key "tls_cert_file" in listener "tcp" (known: address, tls_disable)'),
    ('auto_auth {\n  method "kubernetes" { config { role = "x" } }\n}\n',
     'line 2: unknown auto_auth method "kubernetes"'),
    ('auto_auth {\n  method "approle" { config { role_id_file_path = "/x" } }\n}\n',
     'method "approle" needs config { secret_id_file_path'),
    ('listener "tcp" {\n  address = "0.0.0.0:8100"\n  tls_disable = true\n}\n', "loopback only"),
    ('template {\n}\n', 'line 1: "template" is an OpenBao agent feature'),
    ('cache {\n  default_ttl = "soon"\n}\n', 'line 2: "default_ttl" must be a duration'),
    ('vault {\n  address = \n}\n', "line 3"),
])
def test_a_bad_agent_configuration_is_a_clear_error(coffer_cli, workdir, text, message):
    path = os.path.join(workdir, "agent.hcl")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([coffer_cli, "agent", f"-config={path}"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert message in p.stderr, p.stderr


def test_the_agent_renews_its_token_and_logs_in_again_after_its_max_ttl(coffer_cli, cofferd_bin, bao_bin, workdir):
    server = start_cofferd_dev(cofferd_bin)
    agent = None
    try:
        role_id, secret_id = approle(bao_bin, server.addr, workdir, ttl="token_ttl=3s token_max_ttl=5s")
        run_bao(bao_bin, server.addr, "kv", "put", "secret/app", "password=v1", token="root")
        agent, sink = start_agent(coffer_cli, workdir, server.addr, role_id, secret_id)
        first = open(sink).read()
        seen = set()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # past two TTLs and the max TTL: every read must still work
            r = requests.get(agent.addr + "/v1/secret/data/app", timeout=10)
            assert r.status_code == 200, r.text
            seen.add(open(sink).read())
            time.sleep(0.5)
        assert len(seen) >= 2 and first in seen, "a new token after the max TTL, written to the sink"
    finally:
        if agent:
            agent.stop()
        server.stop()


def test_jwt_auto_auth_for_the_agent_and_coffer_run(coffer_cli, cofferd_bin, bao_bin, workdir):
    """method "jwt": the agent logs in with a JWT read from a file (signed here, checked by cofferd's
    JWT auth method against the configured public key); `coffer run --jwt-file` does the same."""
    key = SigningKey("ES256")
    server = start_cofferd_dev(cofferd_bin)
    agent = None
    try:
        root = {"X-Vault-Token": "root"}
        api = server.addr + "/v1/"
        assert requests.post(api + "sys/auth/jwt", json={"type": "jwt"}, headers=root).status_code == 204
        assert requests.post(api + "auth/jwt/config", json={"jwt_validation_pubkeys": [key.public_pem],
                                                            "bound_issuer": "https://issuer.example"},
                             headers=root).status_code == 204
        assert requests.post(api + "auth/jwt/role/app", json={"role_type": "jwt", "bound_audiences": ["coffer"],
                                                              "user_claim": "sub", "token_policies": ["app"]},
                             headers=root).status_code == 204
        run_bao(bao_bin, server.addr, "policy", "write", "app", "-", input=POLICY, token="root")
        run_bao(bao_bin, server.addr, "kv", "put", "secret/app", "password=by-jwt", token="root")
        jwt_file = os.path.join(workdir, "jwt")
        with open(jwt_file, "w") as f:
            f.write(key.sign(claims(iss="https://issuer.example", aud="coffer", sub="svc-app")))

        listen = f"127.0.0.1:{free_port()}"
        config = os.path.join(workdir, "agent-jwt.hcl")
        with open(config, "w") as f:
            f.write(f'vault {{ address = "{server.addr}" }}\n'
                    f'auto_auth {{\n  method "jwt" {{\n    config {{\n      path = "{jwt_file}"\n      role = "app"\n'
                    f'    }}\n  }}\n}}\nlistener "tcp" {{\n  address = "{listen}"\n  tls_disable = true\n}}\n')
        agent = Server([coffer_cli, "agent", f"-config={config}"], listen)
        client = hvac.Client(url=agent.addr, token="")
        read = client.secrets.kv.v2.read_secret_version(path="app", raise_on_deleted_version=True)
        assert read["data"]["data"]["password"] == "by-jwt"
        assert "app" in client.auth.token.lookup_self()["data"]["policies"]

        template = os.path.join(workdir, "app.tpl")
        with open(template, "w") as f:
            f.write('APP_PASSWORD = "{{ secret "secret/data/app" "password" }}"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        p = subprocess.run([coffer_cli, "run", "--address", server.addr, "-t", template, "--jwt-file", jwt_file,
                            "--jwt-role", "app", "--", "sh", "-c", 'echo "$APP_PASSWORD"'],
                           env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == "by-jwt"
    finally:
        if agent:
            agent.stop()
        server.stop()


def test_namespace_header_is_forwarded_and_wrapping_is_refused(coffer_cli, cofferd_bin, bao_bin, workdir):
    server = start_cofferd_dev(cofferd_bin)
    agent = None
    try:
        role_id, secret_id = approle(bao_bin, server.addr, workdir)
        run_bao(bao_bin, server.addr, "kv", "put", "secret/app", "password=in-root", token="root")
        run_bao(bao_bin, server.addr, "namespace", "create", "team", token="root")
        run_bao(bao_bin, server.addr, "secrets", "enable", "-ns=team", "-path=secret", "kv-v2", token="root")
        run_bao(bao_bin, server.addr, "kv", "put", "-ns=team", "secret/app", "password=in-team", token="root")
        agent, _ = start_agent(coffer_cli, workdir, server.addr, role_id, secret_id, ttl="1h")
        root = {"X-Vault-Token": "root"}
        for _ in range(2):  # the second answers come from the cache: per namespace too
            plain = requests.get(agent.addr + "/v1/secret/data/app", headers=root, timeout=10)
            team = requests.get(agent.addr + "/v1/secret/data/app", headers={**root, "X-Vault-Namespace": "team"},
                                timeout=10)
            assert plain.json()["data"]["data"] == {"password": "in-root"}
            assert team.json()["data"]["data"] == {"password": "in-team"}
        _, out, _ = run_bao(bao_bin, agent.addr, "kv", "get", "-ns=team", "-field=password", "secret/app",
                            token="root")
        assert out.strip() == "in-team"
        wrapped = requests.get(agent.addr + "/v1/secret/data/app", headers={**root, "X-Vault-Wrap-TTL": "60s"},
                               timeout=10)
        assert wrapped.status_code == 400 and "X-Vault-Wrap-TTL" in wrapped.json()["errors"][0]
        assert "in-root" not in wrapped.text
    finally:
        if agent:
            agent.stop()
        server.stop()
