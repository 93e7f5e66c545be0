"""cofferd with `seal "pkcs11"` against a real SoftHSM2 token made here: the bao CLI initialises it
(recovery shares), and after a restart the vault unseals itself through the HSM."""

import json
import os
import subprocess

import requests

from conftest import run_bao, start_cofferd_config

CONFIG = """
storage "sqlite" {{ path = "{dir}/coffer.db" }}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
seal "pkcs11" {{
  lib          = "/usr/lib/softhsm/libsofthsm2.so"
  token_label  = "compat"
  pin          = "1234"
  key_label    = "coffer-root"
  generate_key = true
}}
"""


def test_bao_cli_with_a_pkcs11_sealed_cofferd_that_unseals_itself_after_a_restart(cofferd_bin, bao_bin, workdir):
    tokens = os.path.join(workdir, "tokens")
    os.mkdir(tokens)
    conf = os.path.join(workdir, "softhsm2.conf")
    with open(conf, "w") as f:
        f.write(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = conf  # inherited by cofferd
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "compat", "--pin", "1234", "--so-pin", "5678"],
                   check=True, capture_output=True)

    server = start_cofferd_config(cofferd_bin, CONFIG, workdir)
    try:
        _, out, _ = run_bao(bao_bin, server.addr, "operator", "init", "-recovery-shares=1", "-recovery-threshold=1",
                            format="json")
        init = json.loads(out)
        assert len(init["recovery_keys_b64"]) == 1 and init["root_token"]
        token = init["root_token"]
        _, status, _ = run_bao(bao_bin, server.addr, "status", format="json")
        assert json.loads(status)["type"] == "pkcs11" and json.loads(status)["sealed"] is False
        run_bao(bao_bin, server.addr, "secrets", "enable", "-path=secret", "kv-v2", token=token)
        run_bao(bao_bin, server.addr, "kv", "put", "secret/hsm", "value=through-the-hsm", token=token)
    finally:
        server.stop()

    addr = server.hostport
    server = start_cofferd_config(cofferd_bin, CONFIG, workdir, addr=addr)
    try:
        _, status, _ = run_bao(bao_bin, server.addr, "status", format="json")
        assert json.loads(status)["sealed"] is False, "no unseal step after the restart"
        _, value, _ = run_bao(bao_bin, server.addr, "kv", "get", "-field=value", "secret/hsm", token=token)
        assert value.strip() == "through-the-hsm"
    finally:
        server.stop()


# ---- A wrong PIN over the unauthenticated API (issue 23 item 5) ----

MODULE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pkcs11_test_module.c")
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"

WRONG_PIN_CONFIG = """
storage "sqlite" {{ path = "{dir}/coffer.db" }}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
seal "pkcs11" {{
  lib          = "{dir}/libcoffer-test-p11.so"
  token_label  = "label-q7x"
  pin          = "PIN"
  key_label    = "key-q7x"
  generate_key = true
}}
"""


def softhsm_token(workdir, label):
    """A SoftHSM token in workdir (PIN 1234); returns the serial numbers and slot ids SoftHSM shows."""
    tokens = os.path.join(workdir, "tokens")
    os.mkdir(tokens)
    conf = os.path.join(workdir, "softhsm2.conf")
    with open(conf, "w") as f:
        f.write(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = conf  # inherited by cofferd
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", "1234", "--so-pin", "5678"],
                   check=True, capture_output=True)
    shown = subprocess.run(["softhsm2-util", "--show-slots"], check=True, capture_output=True, text=True).stdout
    details = []
    for block in shown.split("\nSlot ")[1:]:
        lines = [line.strip() for line in block.splitlines()]
        if "Initialized:      yes" not in lines:
            continue
        slot = int(lines[0])
        details += [str(slot), hex(slot)] + [line.split()[-1] for line in lines if line.startswith("Serial number:")]
    assert len(details) == 3, shown
    return details


def logging_module(workdir):
    """Builds Tests/compat/pkcs11_test_module.c into workdir: SoftHSM with every C_Login logged, and
    C_EncryptInit/C_DecryptInit failing with CKR_DEVICE_REMOVED while the `unplugged` file exists."""
    subprocess.run(["cc", "-shared", "-fPIC", MODULE_SOURCE, "-o", os.path.join(workdir, "libcoffer-test-p11.so"), "-ldl"],
                   check=True)
    os.environ["COFFER_TEST_P11_LOG"] = os.path.join(workdir, "logins.txt")
    os.environ["COFFER_TEST_P11_UNPLUG"] = os.path.join(workdir, "unplugged")


def logins(workdir):
    path = os.path.join(workdir, "logins.txt")
    return open(path).read().split()[1::2] if os.path.exists(path) else []


def assert_generic(response, status, details, workdir):
    """The answer to a caller with no token names nothing of the HSM's configuration."""
    assert response.status_code == status, response.text
    assert "the reason is in the server's log" in response.text
    for detail in [workdir, SOFTHSM, "libcoffer-test-p11", "softhsm", "label-q7x", "key-q7x", "slot", "serial", "CKR_"] + details:
        assert detail not in response.text, f"{response.text} names {detail}"


def test_a_wrong_pin_is_tried_once_and_callers_without_a_token_learn_nothing_of_the_hsm(cofferd_bin, workdir):
    details = softhsm_token(workdir, "label-q7x")
    logging_module(workdir)
    server = start_cofferd_config(cofferd_bin, WRONG_PIN_CONFIG.replace("PIN", "9999"), workdir)
    try:
        # Anyone who reaches the listener can call sys/init on a new vault; the seal wraps the root key.
        for _ in range(4):
            r = requests.put(server.addr + "/v1/sys/init", json={"recovery_shares": 1, "recovery_threshold": 1}, timeout=30)
            assert_generic(r, 400, details, workdir)
        assert logins(workdir) == ["0xa0"], "one login, refused with CKR_PIN_INCORRECT, then none"
        assert not requests.get(server.addr + "/v1/sys/init", timeout=10).json()["initialized"]
    finally:
        server.stop()
    log = server.output()
    # The operator's log has the detail, once.
    assert log.count("CKR_PIN_INCORRECT") == 1, log
    assert "label-q7x" in log


def test_a_pin_changed_while_cofferd_runs_is_tried_once_over_sys_unseal(cofferd_bin, workdir):
    details = softhsm_token(workdir, "label-q7x")
    logging_module(workdir)
    server = start_cofferd_config(cofferd_bin, WRONG_PIN_CONFIG.replace("PIN", "1234"), workdir)
    try:
        init = requests.put(server.addr + "/v1/sys/init", json={"recovery_shares": 1, "recovery_threshold": 1}, timeout=30)
        assert init.status_code == 200, init.text
        token = init.json()["root_token"]
        r = requests.put(server.addr + "/v1/sys/seal", headers={"X-Vault-Token": token}, timeout=30)
        assert r.status_code == 204, r.text
        # The security officer changes the PIN; then the HSM drops out for a moment, so the seal's
        # connection is gone and its next use logs in again with the PIN cofferd was given.
        subprocess.run(["pkcs11-tool", "--module", SOFTHSM, "--token-label", "label-q7x", "--login", "--pin", "1234",
                        "--change-pin", "--new-pin", "4321"], check=True, capture_output=True)
        open(os.environ["COFFER_TEST_P11_UNPLUG"], "w").close()
        r = requests.put(server.addr + "/v1/sys/unseal", json={}, timeout=30)
        assert_generic(r, 503, details, workdir)
        os.remove(os.environ["COFFER_TEST_P11_UNPLUG"])
        for _ in range(5):
            r = requests.put(server.addr + "/v1/sys/unseal", json={}, timeout=30)
            assert_generic(r, 400, details, workdir)
        assert logins(workdir) == ["0x0", "0xa0"], "the first login, then one with the old PIN, then none"
        assert requests.get(server.addr + "/v1/sys/seal-status", timeout=10).json()["sealed"] is True
    finally:
        server.stop()
    log = server.output()
    assert log.count("CKR_DEVICE_REMOVED") == 1 and log.count("CKR_PIN_INCORRECT") == 1, log
