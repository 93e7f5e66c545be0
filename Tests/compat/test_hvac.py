"""hvac (`pip install hvac`), the Python Vault client, against cofferd."""
import hvac
import pytest
from hvac import exceptions

from conftest import start_cofferd_config

POLICY = 'path "secret/data/py/*" { capabilities = ["create", "read", "update"] }'


def test_kv_v2_and_v1(cofferd_dev):
    client = hvac.Client(url=cofferd_dev.addr, token="root")
    assert client.is_authenticated()
    kv = client.secrets.kv.v2
    kv.create_or_update_secret(path="py/db", secret={"user": "app", "port": 5432})
    kv.patch(path="py/db", secret={"port": 6432})
    read = kv.read_secret_version(path="py/db", raise_on_deleted_version=True)
    assert read["data"]["data"] == {"user": "app", "port": 6432} and read["data"]["metadata"]["version"] == 2
    assert kv.read_secret_version(path="py/db", version=1, raise_on_deleted_version=True)["data"]["data"]["port"] == 5432
    assert kv.list_secrets(path="py")["data"]["keys"] == ["db"]
    kv.delete_latest_version_of_secret(path="py/db")
    deleted = kv.read_secret_version(path="py/db", raise_on_deleted_version=False)
    assert deleted["data"]["data"] is None and deleted["data"]["metadata"]["deletion_time"] != ""
    kv.undelete_secret_versions(path="py/db", versions=[2])
    kv.destroy_secret_versions(path="py/db", versions=[1])
    meta = kv.read_secret_metadata(path="py/db")["data"]
    assert meta["versions"]["1"]["destroyed"] and meta["current_version"] == 2
    kv.delete_metadata_and_all_versions(path="py/db")
    with pytest.raises(exceptions.InvalidPath):
        kv.read_secret_version(path="py/db", raise_on_deleted_version=True)

    client.sys.enable_secrets_engine("kv", path="pyv1", options={"version": "1"})
    assert "pyv1/" in client.sys.list_mounted_secrets_engines()["data"]
    client.secrets.kv.v1.create_or_update_secret(path="one", secret={"a": "b"}, mount_point="pyv1")
    assert client.secrets.kv.v1.read_secret(path="one", mount_point="pyv1")["data"] == {"a": "b"}
    assert client.secrets.kv.v1.list_secrets(path="", mount_point="pyv1")["data"]["keys"] == ["one"]
    client.sys.disable_secrets_engine("pyv1")


def test_policies_tokens_and_exception_classes(cofferd_dev):
    client = hvac.Client(url=cofferd_dev.addr, token="root")
    client.sys.create_or_update_policy(name="py", policy=POLICY)
    assert client.sys.read_policy(name="py")["data"]["rules"] == POLICY
    assert "py" in client.sys.list_policies()["data"]["policies"]

    created = client.auth.token.create(policies=["py"], ttl="1h")["auth"]
    limited = hvac.Client(url=cofferd_dev.addr, token=created["client_token"])
    assert limited.auth.token.lookup_self()["data"]["policies"] == ["default", "py"]
    assert limited.auth.token.renew_self(increment="2h")["auth"]["lease_duration"] == 7200
    assert client.auth.token.lookup_accessor(created["accessor"])["data"]["accessor"] == created["accessor"]
    caps = client.sys.get_capabilities(paths=["secret/data/py/x"], token=created["client_token"])
    assert caps["secret/data/py/x"] == ["create", "read", "update"]

    limited.secrets.kv.v2.create_or_update_secret(path="py/ok", secret={"x": "1"})
    with pytest.raises(exceptions.Forbidden):  # 403 outside the policy
        limited.secrets.kv.v2.create_or_update_secret(path="elsewhere", secret={"x": "1"})
    with pytest.raises(exceptions.InvalidRequest) as bad:  # 400
        client.sys.create_or_update_policy(name="broken", policy='path "x" { capabilities = ["fly"] }')
    # The error locates the bad capability and lists the valid ones; it never quotes policy text.
    assert "line 1, column 28: unknown capability" in str(bad.value) and "fly" not in str(bad.value)
    with pytest.raises(exceptions.InvalidPath):  # 404
        client.secrets.kv.v2.read_secret_version(path="py/nothing", raise_on_deleted_version=True)
    with pytest.raises(exceptions.InvalidRequest):  # 400 check-and-set
        client.secrets.kv.v2.create_or_update_secret(path="py/ok", secret={"x": "2"}, cas=0)

    client.auth.token.revoke(created["client_token"])
    assert not limited.is_authenticated()
    client.sys.delete_policy(name="py")


def test_sealed_is_vault_down_and_unseal_works(cofferd_bin, workdir):
    server = start_cofferd_config(cofferd_bin, """
storage "memory" {{}}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
""", workdir)
    try:
        client = hvac.Client(url=server.addr)
        assert not client.sys.is_initialized()
        assert client.sys.read_health_status(method="HEAD").status_code == 501  # uninitialised
        result = client.sys.initialize(secret_shares=3, secret_threshold=2)
        client.token = result["root_token"]
        assert client.sys.is_sealed()
        with pytest.raises(exceptions.VaultDown) as down:  # 503 "Vault is sealed"
            client.sys.list_mounted_secrets_engines()
        assert "Vault is sealed" in str(down.value)
        client.sys.submit_unseal_keys(result["keys"][:2])
        assert not client.sys.is_sealed()
        assert "sys/" in client.sys.list_mounted_secrets_engines()["data"]
    finally:
        server.stop()


def test_rekey_with_verification_backup_paths_and_move_backend(cofferd_bin, workdir):
    """hvac's rekey calls with require_verification: the new keys take effect only once entered back."""
    server = start_cofferd_config(cofferd_bin, """
storage "memory" {{}}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
""", workdir)
    try:
        client = hvac.Client(url=server.addr)
        init = client.sys.initialize(secret_shares=3, secret_threshold=2)
        client.token = init["root_token"]
        client.sys.submit_unseal_keys(init["keys"][:2])
        client.sys.enable_secrets_engine("kv", path="before", options={"version": "1"})
        client.secrets.kv.v1.create_or_update_secret(path="db", secret={"pw": "s3cret"}, mount_point="before")

        started = client.sys.start_rekey(secret_shares=2, secret_threshold=2, require_verification=True)
        assert started["started"] and started["verification_required"] and started["t"] == 2 and started["n"] == 2
        done = client.sys.rekey_multi(init["keys"][1:], nonce=started["nonce"])
        assert done["complete"] and done["verification_required"] and len(done["keys"]) == 2
        progress = client.sys.read_rekey_verify_progress()
        assert progress["started"] and progress["nonce"] == done["verification_nonce"] and progress["progress"] == 0
        # Cancelling the verification keeps the rekey pending with a new nonce.
        restarted = client.sys.cancel_rekey_verify()
        assert restarted["nonce"] != done["verification_nonce"] and restarted["progress"] == 0
        nonce = client.sys.read_rekey_verify_progress()["nonce"]
        verified = client.sys.rekey_verify_multi(done["keys_base64"], nonce=nonce)
        assert verified == {"nonce": nonce, "complete": True}

        client.sys.seal()
        with pytest.raises(exceptions.InvalidRequest):  # an old key is no longer one of the current keys
            client.sys.submit_unseal_key(init["keys"][0])
        client.sys.submit_unseal_keys(done["keys"])
        assert not client.sys.is_sealed()

        with pytest.raises(exceptions.InvalidRequest) as none:  # 400, as OpenBao answers when it holds none
            client.sys.read_backup_keys()
        assert "no backed-up keys found" in str(none.value)

        client.sys.move_backend("before", "after")
        assert client.secrets.kv.v1.read_secret(path="db", mount_point="after")["data"] == {"pw": "s3cret"}
        assert "before/" not in client.sys.list_mounted_secrets_engines()["data"]
    finally:
        server.stop()
