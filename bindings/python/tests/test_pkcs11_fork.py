"""The PKCS#11 seal after fork(): the child must initialise the module again and log in again
(PKCS#11 sessions do not survive fork). Real SoftHSM2 token, created here in a temporary directory."""

import os
import shutil
import subprocess

import pytest

import coffer

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def test_a_forked_child_opens_and_auto_unseals_through_the_hsm(tmp_path):
    assert shutil.which("softhsm2-util") and os.path.exists(MODULE), "make deps installs softhsm2"
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "coffer-fork", "--pin", "1234",
                    "--so-pin", "5678"], check=True, capture_output=True)
    config = {
        "storage": {"type": "sqlite", "path": str(tmp_path / "coffer.db")},
        "seal": {"type": "pkcs11", "lib": MODULE, "token_label": "coffer-fork", "pin": "1234",
                 "key_label": "coffer-root", "generate_key": True},
    }
    # One process owns a database at a time (docs/architecture.md), so the parent closes its handle
    # before each child opens the file; the PKCS#11 module stays initialised and logged in in the
    # parent process, which is what a child must not reuse.
    with coffer.Coffer(config) as parent:
        init = parent.request("PUT", "sys/init", body={"recovery_shares": 1, "recovery_threshold": 1}).body
        assert init["recovery_keys"] and init["root_token"]
        parent.token = init["root_token"]
        parent.request("POST", "sys/mounts/secret", body={"type": "kv", "options": {"version": "2"}})
        parent.kv.put("app/db", {"password": "forked"})

    def in_child(conf_path):
        """Forks; the child points SOFTHSM2_CONF at conf_path, opens a new handle (which unseals
        through the HSM) and reads the secret. Returns the child's exit code."""
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                os.environ["SOFTHSM2_CONF"] = conf_path
                with coffer.Coffer(config) as child:
                    code = 0 if child.kv.get("app/db", token=init["root_token"]).data == {"password": "forked"} else 1
            except coffer.CofferError as error:
                code = 2 if "SOFTHSM2_CONF" in str(error) else 4
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1

    # SoftHSM reads its configuration in C_Initialize. A child given a missing one fails with
    # that error: proof that the child initialised the module again instead of using the
    # parent's state (sessions and logins do not survive fork on real HSMs).
    assert in_child(str(tmp_path / "missing.conf")) == 2
    # With the right configuration the child unseals through the HSM and reads the secret.
    assert in_child(str(conf)) == 0
    # The parent still works after the child has gone.
    with coffer.Coffer(config) as parent:
        assert parent.kv.get("app/db", token=init["root_token"]).data == {"password": "forked"}


def test_a_second_opener_of_the_same_database_is_refused(tmp_path):
    config = {"storage": {"type": "sqlite", "path": str(tmp_path / "coffer.db")}}
    with coffer.Coffer(config):
        with pytest.raises(coffer.CofferError) as refused:
            coffer.Coffer(config)
        assert f"in use by another Coffer (pid {os.getpid()})" in str(refused.value)
    with coffer.Coffer(config):  # released by the first handle's close
        pass
