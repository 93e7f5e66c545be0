"""COFFER_HSM_PIN leaves the environment once the pkcs11 seal has read it: child processes do not
inherit it and /proc/<pid>/environ no longer shows it. Real SoftHSM2 token, made here."""

import json
import os
import shutil
import subprocess
import sys

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "73519246"

# Run in a new process, so that COFFER_HSM_PIN is in the environment block the kernel set up at exec
# (what /proc/<pid>/environ shows), as it is for a service started with it.
CHILD = r"""
import ctypes, json, subprocess, sys
import coffer

config = json.loads(sys.argv[1])
getenv = ctypes.CDLL(None).getenv
getenv.restype = ctypes.c_char_p
getenv.argtypes = [ctypes.c_char_p]
before = getenv(b"COFFER_HSM_PIN")
with coffer.Coffer(config) as c:
    after = getenv(b"COFFER_HSM_PIN")
    with open("/proc/self/environ", "rb") as f:
        environ = f.read()
    # A child started now inherits the C environment.
    inherited = subprocess.run(["/usr/bin/env"], capture_output=True, check=True).stdout
    # The seal kept the PIN: initialising logs in to the token with it.
    init = c.request("PUT", "sys/init", body={"recovery_shares": 1, "recovery_threshold": 1}).body
print(json.dumps({
    "before": before is not None,
    "after": after is not None,
    "pin_in_proc_environ": sys.argv[2].encode() in environ,
    "pin_inherited": sys.argv[2].encode() in inherited,
    "initialised": bool(init.get("root_token")),
}))
"""


def test_the_pin_from_the_environment_is_taken_out_of_it(tmp_path):
    assert shutil.which("softhsm2-util") and os.path.exists(MODULE), "make deps installs softhsm2"
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(conf), COFFER_HSM_PIN=PIN)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "coffer-env", "--pin", PIN, "--so-pin", "5678"],
                   check=True, capture_output=True, env=env)
    config = {
        "storage": {"type": "memory"},
        "seal": {"type": "pkcs11", "lib": MODULE, "token_label": "coffer-env", "key_label": "coffer-root",
                 "generate_key": True},
    }
    run = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config), PIN], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen == {"before": True, "after": False, "pin_in_proc_environ": False, "pin_inherited": False,
                    "initialised": True}
