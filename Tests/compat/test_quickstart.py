"""What `make run` tells a new user to type, run exactly as printed (only the address differs)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "Examples", "Server")


def example(name, addr):
    with open(os.path.join(EXAMPLES, name)) as f:
        return f.read().replace("http://127.0.0.1:8200", addr)


def test_five_line_hvac_script(cofferd_bin, workdir):
    from conftest import start_cofferd_dev
    server = start_cofferd_dev(cofferd_bin)  # its own server: the script writes fixed names
    try:
        p = subprocess.run([sys.executable, "-c", example("try_hvac.py", server.addr)], capture_output=True,
                           text=True, timeout=60)
    finally:
        server.stop()
    assert p.stdout.strip() == "{'password': 's3cret'}"
    assert p.returncode == 1 and "hvac.exceptions.Forbidden: permission denied" in p.stderr, p.stderr


def test_bao_cli_walkthrough(cofferd_bin, bao_bin, workdir):
    from conftest import start_cofferd_dev
    server = start_cofferd_dev(cofferd_bin)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["PATH"] = os.path.dirname(bao_bin) + os.pathsep + env["PATH"]
    env["HOME"] = workdir
    try:
        p = subprocess.run(["bash", "-c", example("try-bao.sh", server.addr)], capture_output=True, text=True,
                           env=env, timeout=120)
    finally:
        server.stop()
    assert "Success! Uploaded policy: myapp-read" in p.stdout
    assert "password    s3cret" in p.stdout  # kv get, then the limited token's read
    assert p.stdout.rstrip().endswith("s3cret")
    assert p.returncode == 2 and "Code: 403" in p.stderr and "permission denied" in p.stderr, p.stderr


def test_approle_walkthrough(cofferd_bin, bao_bin, workdir):
    """The README's AppRole tour: a wrapped secret ID, unwrapped once, a login, one read allowed, one write refused."""
    from conftest import start_cofferd_dev
    server = start_cofferd_dev(cofferd_bin)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["PATH"] = os.path.dirname(bao_bin) + os.pathsep + env["PATH"]
    env["HOME"] = workdir
    script = example("try-approle.sh", server.addr) + 'bao unwrap "$WRAPPED"\n'
    try:
        p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    finally:
        server.stop()
    assert "Success! Enabled approle auth method at: approle/" in p.stdout, p.stdout + p.stderr
    assert "s3cret" in p.stdout and "Code: 403" in p.stderr, p.stdout + p.stderr
    # The appended second unwrap of the same wrapping token is refused.
    assert p.returncode == 2 and p.stderr.rstrip().endswith("wrapping token is not valid or does not exist"), p.stderr
