"""cofferd with `seal "pkcs11"` against a real SoftHSM2 token made here: the bao CLI initialises it
(recovery shares), and after a restart the vault unseals itself through the HSM."""

import json
import os
import subprocess

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
