"""`coffer run -- cmd` with real processes: a real cofferd, the bao CLI writing secrets, and a small
Python child that prints what it sees. docs/run-and-agent.md."""
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
import requests

from conftest import free_port, run_bao, start_cofferd_config, start_cofferd_dev, stop_process

# How soon a child must see a changed secret: the rotation grace period these tests give (the
# poll interval is 300ms, so this is ample and a regression to "never" fails).
GRACE_SECONDS = 10


@pytest.fixture(scope="session")
def coffer_cli(cofferd_bin):
    path = os.environ.get("COFFER_CLI") or os.path.join(os.path.dirname(cofferd_bin), "coffer-cli")
    assert os.access(path, os.X_OK), f"coffer-cli not found at {path} (swift build --product coffer-cli)"
    return path


@pytest.fixture
def cofferd(cofferd_bin):
    server = start_cofferd_dev(cofferd_bin)
    yield server
    server.stop()


CHILD = r"""
import os, signal, sys, time
def show(tag):
    value = os.environ.get("APP_PASSWORD")
    conf = os.environ.get("CONF_FILE")
    text = open(conf).read().strip() if conf and os.path.exists(conf) else None
    print(f"{tag} pid={os.getpid()} env={value} file={text}", flush=True)
signal.signal(signal.SIGHUP, lambda *_: show("hup"))
signal.signal(signal.SIGTERM, lambda *_: (print("term", flush=True), sys.exit(int(os.environ.get("TERM_EXIT", "0")))))
show("start")
while True:
    time.sleep(0.05)
"""


class Run:
    """`coffer run` as a process, its stdout and stderr collected line by line."""

    def __init__(self, coffer_cli, args, env):
        self.proc = subprocess.Popen([coffer_cli, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, start_new_session=True)
        self.out, self.err = [], []
        self.lock = threading.Condition()
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, lines), daemon=True).start()

    def _pump(self, stream, lines):
        for line in stream:
            with self.lock:
                lines.append(line.rstrip("\n"))
                self.lock.notify_all()

    def wait_line(self, predicate, timeout=GRACE_SECONDS, stream="out"):
        lines = self.out if stream == "out" else self.err
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for line in lines:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching {stream} line within {timeout}s\nstdout: {self.out}\nstderr: {self.err}")
                self.lock.wait(remaining)

    def stop(self):
        stop_process(self.proc, 10)


def child_env(token="root", **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["BAO_TOKEN"] = token
    env.update(extra)
    return env


def write_file(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def setup(workdir, template):
    return (write_file(workdir, "app.tpl", template), write_file(workdir, "child.py", CHILD))


ENV_TEMPLATE = '# the app\'s database password\nAPP_PASSWORD = "{{ secret "secret/data/app" "password" }}"\n'


def test_child_sees_an_overwritten_secret_by_restart(coffer_cli, bao_bin, cofferd, workdir):
    run_bao(bao_bin, cofferd.addr, "kv", "put", "secret/app", "password=first-value", token="root")
    template, child = setup(workdir, ENV_TEMPLATE)
    run = Run(coffer_cli, ["--address", cofferd.addr, "-t", template, "--poll-interval", "300ms", "--",
                           sys.executable, child], child_env())
    try:
        first = run.wait_line(lambda l: l.startswith("start") and "env=first-value" in l)
        run_bao(bao_bin, cofferd.addr, "kv", "put", "secret/app", "password=second-value", token="root")
        written = time.monotonic()
        second = run.wait_line(lambda l: l.startswith("start") and "env=second-value" in l)
        assert time.monotonic() - written < GRACE_SECONDS
        assert first.split()[1] != second.split()[1], "the child was restarted (a new pid)"
        run.wait_line(lambda l: "secrets changed for variable APP_PASSWORD" in l, stream="err")
        assert not any("first-value" in l or "second-value" in l for l in run.err), "no value on stderr"
    finally:
        run.stop()


def test_files_are_rendered_0600_and_the_child_is_signalled(coffer_cli, bao_bin, cofferd, workdir):
    run_bao(bao_bin, cofferd.addr, "kv", "put", "secret/app", "password=one", token="root")
    conf = os.path.join(workdir, "db.conf")
    template, child = setup(workdir, f'file "{conf}" = "password={{{{ secret "secret/data/app" "password" }}}}\\n"\n')
    run = Run(coffer_cli, ["--address", cofferd.addr, "--template", template, "--poll-interval", "300ms",
                           "--on-change", "signal:HUP", "--", sys.executable, child], child_env(CONF_FILE=conf))
    try:
        start = run.wait_line(lambda l: l.startswith("start") and "file=password=one" in l)
        assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
        run_bao(bao_bin, cofferd.addr, "kv", "put", "secret/app", "password=two", token="root")
        hup = run.wait_line(lambda l: l.startswith("hup") and "file=password=two" in l)
        assert hup.split()[1] == start.split()[1], "signalled, not restarted"
        assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    finally:
        run.stop()


def test_child_keeps_running_when_cofferd_is_killed(coffer_cli, bao_bin, cofferd_bin, workdir):
    server = start_cofferd_dev(cofferd_bin)
    try:
        run_bao(bao_bin, server.addr, "kv", "put", "secret/app", "password=kept", token="root")
        template, child = setup(workdir, ENV_TEMPLATE)
        run = Run(coffer_cli, ["--address", server.addr, "-t", template, "--poll-interval", "300ms", "--",
                               sys.executable, child], child_env())
        try:
            start = run.wait_line(lambda l: l.startswith("start") and "env=kept" in l)
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            run.wait_line(lambda l: "degraded" in l and "keeps running" in l, stream="err")
            time.sleep(1)  # a few more poll intervals with the store gone: nothing may restart the child
            assert run.proc.poll() is None
            pid = int(start.split()[1].removeprefix("pid="))
            os.kill(pid, 0)  # the child is alive
            assert sum(1 for l in run.out if l.startswith("start")) == 1, "not restarted"
        finally:
            run.stop()
    finally:
        server.stop()


def test_signals_are_forwarded_and_the_exit_status_is_the_childs(coffer_cli, bao_bin, cofferd, workdir):
    run_bao(bao_bin, cofferd.addr, "kv", "put", "secret/app", "password=x", token="root")
    template, child = setup(workdir, ENV_TEMPLATE)
    run = Run(coffer_cli, ["--address", cofferd.addr, "-t", template, "--", sys.executable, child],
              child_env(TERM_EXIT="7"))
    try:
        run.wait_line(lambda l: l.startswith("start"))
        run.proc.send_signal(signal.SIGHUP)
        run.wait_line(lambda l: l.startswith("hup"))
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=10) == 7
        assert "term" in run.out
    finally:
        run.stop()
    p = subprocess.run([coffer_cli, "run", "--address", cofferd.addr, "-t", template, "--", sys.executable, "-c",
                        "import sys; sys.exit(3)"],
                       env=child_env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 3, p.stderr


def test_store_down_at_start_uses_the_env_file(coffer_cli, workdir):
    template, child = setup(workdir, ENV_TEMPLATE)
    nowhere = f"http://127.0.0.1:{free_port()}"
    env_file = write_file(workdir, "fallback.env", "# fallback\nexport APP_PASSWORD='from-the-env-file'\n")
    run = Run(coffer_cli, ["--address", nowhere, "-t", template, "--env-file", env_file, "--poll-interval", "300ms",
                           "--", sys.executable, child], child_env())
    try:
        run.wait_line(lambda l: l.startswith("start") and "env=from-the-env-file" in l)
        run.wait_line(lambda l: "starting on values from env_file (degraded)" in l, stream="err")
    finally:
        run.stop()
    p = subprocess.run([coffer_cli, "run", "--address", nowhere, "-t", template, "--", "true"], env=child_env(),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "cannot read the secrets" in p.stderr


@pytest.mark.parametrize("template, where, message", [
    ('APP_PASSWORD = "{{ secret "secret/data/app" }}"\n', "app.tpl:1:20:", "secret takes two double-quoted arguments"),
    ('# ok\nAPP_PASSWORD = hunter2-typed-here\n', "app.tpl:2:16:", "expected a double-quoted value"),
    ('APP_PASSWORD = "{{ secret "secret/data/app" "password" }"\n', "app.tpl:1:", "}}"),
    ('APP_PASSWORD = "{{ vault "hunter2" }}"\n', "app.tpl:1:20:", "unknown function"),
    ('A = "x"\nA = "hunter2"\n', "app.tpl:2:1:", "already set at line 1"),
    ('9LIVES = "hunter2"\n', "app.tpl:1:1:", "expected a variable name"),
])
def test_a_malformed_template_is_a_clear_error(coffer_cli, workdir, template, where, message):
    path = write_file(workdir, "app.tpl", template)
    p = subprocess.run([coffer_cli, "run", "--address", "http://127.0.0.1:1", "-t", path, "--", "true"],
                       env=child_env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert where in p.stderr and message in p.stderr, p.stderr
    assert "hunter2" not in p.stderr


@pytest.mark.parametrize("text, where, message", [
    ("OK=1\nAPP_PASSWORD=\"hunter2 not closed\n", "bad.env line 2:", "not closed"),
    ("APP PASSWORD=hunter2\n", "bad.env line 1:", "the key is not a variable name"),
    ("APP_PASSWORD='hunter2' trailing\n", "bad.env line 1:", "unexpected text after the closing quote"),
])
def test_an_env_file_with_bad_syntax_is_a_clear_error(coffer_cli, workdir, text, where, message):
    template, _ = setup(workdir, ENV_TEMPLATE)
    env_file = write_file(workdir, "bad.env", text)
    p = subprocess.run([coffer_cli, "run", "--address", "http://127.0.0.1:1", "-t", template, "--env-file", env_file,
                        "--", "true"], env=child_env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert where in p.stderr and message in p.stderr, p.stderr
    assert "hunter2" not in p.stderr


def test_usage_errors(coffer_cli, workdir):
    template, _ = setup(workdir, ENV_TEMPLATE)
    for args, message in [
        (["run", "-t", template], "give the command to run after --"),
        (["run", "--", "true"], "--template FILE is required"),
        (["run", "-t", template, "--on-change", "reload", "--", "true"], "--on-change must be restart or signal:NAME"),
        (["run", "-t", template, "--bogus", "--", "true"], "unknown option --bogus"),
        (["frobnicate"], 'unknown command "frobnicate"'),
    ]:
        p = subprocess.run([coffer_cli, *args], env=child_env(), capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and message in p.stderr, (args, p.stderr)
    p = subprocess.run([coffer_cli, "run", "-t", template, "--", "true"], env={"PATH": os.environ["PATH"]},
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--address URL (or BAO_ADDR)" in p.stderr, p.stderr


def test_approle_login(coffer_cli, bao_bin, cofferd, workdir):
    """No token at all: `coffer run` logs in with AppRole from the role ID and secret ID files."""
    addr = cofferd.addr
    run_bao(bao_bin, addr, "auth", "enable", "approle", token="root")
    run_bao(bao_bin, addr, "policy", "write", "app", "-", input='path "secret/data/app" { capabilities = ["read"] }\n',
            token="root")
    run_bao(bao_bin, addr, "write", "auth/approle/role/app", "token_policies=app", token="root")
    _, role_id, _ = run_bao(bao_bin, addr, "read", "-field=role_id", "auth/approle/role/app/role-id", token="root")
    _, secret_id, _ = run_bao(bao_bin, addr, "write", "-f", "-field=secret_id", "auth/approle/role/app/secret-id",
                              token="root")
    run_bao(bao_bin, addr, "kv", "put", "secret/app", "password=by-approle", token="root")
    template, _ = setup(workdir, ENV_TEMPLATE)
    env = child_env()
    del env["BAO_TOKEN"]
    p = subprocess.run([coffer_cli, "run", "--address", addr, "-t", template,
                        "--role-id-file", write_file(workdir, "role-id", role_id),
                        "--secret-id-file", write_file(workdir, "secret-id", secret_id),
                        "--", sys.executable, "-c", "import os; print(os.environ['APP_PASSWORD'])"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "by-approle"


def test_a_child_that_ignores_sigterm_is_killed_after_the_kill_timeout(coffer_cli, bao_bin, cofferd, workdir):
    run_bao(bao_bin, cofferd.addr, "kv", "put", "secret/app", "password=x", token="root")
    template, _ = setup(workdir, ENV_TEMPLATE)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    run = Run(coffer_cli, ["--address", cofferd.addr, "-t", template, "--kill-timeout", "500ms", "--",
                           sys.executable, "-c", stubborn], child_env())
    try:
        run.wait_line(lambda l: l == "ready")
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=10) == 128 + signal.SIGKILL
    finally:
        run.stop()


def test_child_sees_a_rotated_secret_within_the_grace_period(coffer_cli, bao_bin, cofferd, workdir):
    """Rotation (docs/rotation.md, the KV v2 `rotation/` and `rotate/` paths): the secret rotated by
    cofferd itself reaches the child, restarted, before the grace period ends."""
    grace = 10
    run_bao(bao_bin, cofferd.addr, "kv", "put", "secret/app", "password=before-rotation", token="root")
    code, _, err = run_bao(bao_bin, cofferd.addr, "write", "secret/rotation/app", "field=password",
                           "generator=password", "length=24", f"grace_period={grace}s", token="root", check=False)
    assert code == 0, err
    template, child = setup(workdir, ENV_TEMPLATE)
    run = Run(coffer_cli, ["--address", cofferd.addr, "-t", template, "--poll-interval", "500ms", "--",
                           sys.executable, child], child_env())
    try:
        run.wait_line(lambda l: l.startswith("start") and "env=before-rotation" in l)
        started = time.monotonic()
        rotate = threading.Thread(target=run_bao, args=(bao_bin, cofferd.addr, "write", "-f", "secret/rotate/app"),
                                  kwargs={"token": "root"}, daemon=True)
        rotate.start()
        line = run.wait_line(lambda l: l.startswith("start") and "env=before-rotation" not in l, timeout=grace)
        assert time.monotonic() - started < grace
        rotate.join(timeout=30)
        _, current, _ = run_bao(bao_bin, cofferd.addr, "kv", "get", "-field=password", "secret/app", token="root")
        assert f"env={current.strip()}" in line and len(current.strip()) == 24
    finally:
        run.stop()


def test_the_child_switching_is_acknowledged_to_a_rotation_that_waits_for_it(coffer_cli, bao_bin, cofferd, workdir):
    """A rotation with required_acks=app and a long grace period ends as soon as `coffer run --ack-as
    app` has restarted the child on the new version, not at the end of the grace period."""
    run_bao(bao_bin, cofferd.addr, "kv", "put", "secret/app", "password=before-rotation", token="root")
    code, _, err = run_bao(bao_bin, cofferd.addr, "write", "secret/rotation/app", "field=password",
                           "generator=password", "length=24", "grace_period=300s", "required_acks=app",
                           token="root", check=False)
    assert code == 0, err
    template, child = setup(workdir, ENV_TEMPLATE)
    run = Run(coffer_cli, ["--address", cofferd.addr, "-t", template, "--poll-interval", "500ms", "--ack-as", "app",
                           "--", sys.executable, child], child_env())
    try:
        run.wait_line(lambda l: l.startswith("start") and "env=before-rotation" in l)
        run_bao(bao_bin, cofferd.addr, "write", "-f", "secret/rotate/app", token="root")
        run.wait_line(lambda l: l.startswith("start") and "env=before-rotation" not in l)
        run.wait_line(lambda l: "acknowledged version 2 of secret/data/app as app" in l, stream="err")
        deadline = time.monotonic() + 10
        while True:
            _, out, _ = run_bao(bao_bin, cofferd.addr, "read", "-format=json", "secret/rotation/app", token="root")
            status = json.loads(out)["data"]["status"]
            if status.get("phase") == "idle":
                break
            assert time.monotonic() < deadline, f"the rotation did not finish after the acknowledgement: {status}"
            time.sleep(0.2)
        assert (status.get("last_run") or {}).get("outcome") == "succeeded", status
    finally:
        run.stop()


SQLITE_CONFIG = """
storage "sqlite" {{ path = "{dir}/coffer.db" }}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
"""


def test_the_child_outlives_a_cofferd_outage_and_gets_the_value_written_after_it(coffer_cli, cofferd_bin, workdir):
    data = os.path.join(workdir, "data")
    os.mkdir(data)
    server = start_cofferd_config(cofferd_bin, SQLITE_CONFIG, data)
    api = server.addr + "/v1/"
    init = requests.put(api + "sys/init", json={"secret_shares": 1, "secret_threshold": 1}).json()
    key, root = init["keys"][0], {"X-Vault-Token": init["root_token"]}
    try:
        assert requests.put(api + "sys/unseal", json={"key": key}).json()["sealed"] is False
        assert requests.post(api + "sys/mounts/secret", json={"type": "kv", "options": {"version": "2"}},
                             headers=root).status_code == 204
        assert requests.put(api + "secret/data/app", json={"data": {"password": "before-outage"}},
                            headers=root).status_code == 200
        template, child = setup(workdir, ENV_TEMPLATE)
        run = Run(coffer_cli, ["--address", server.addr, "-t", template, "--poll-interval", "300ms", "--",
                               sys.executable, child], child_env(token=init["root_token"]))
        try:
            first = run.wait_line(lambda l: l.startswith("start") and "env=before-outage" in l)
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            run.wait_line(lambda l: "keeps running on the values it has (degraded)" in l, stream="err")
            server = start_cofferd_config(cofferd_bin, SQLITE_CONFIG, data, addr=server.hostport)
            assert requests.put(api + "sys/unseal", json={"key": key}).json()["sealed"] is False
            assert requests.put(api + "secret/data/app", json={"data": {"password": "after-outage"}},
                                headers=root).status_code == 200
            run.wait_line(lambda l: "the store answers again" in l, stream="err")
            second = run.wait_line(lambda l: l.startswith("start") and "env=after-outage" in l)
            assert first.split()[1] != second.split()[1]
            assert sum(1 for l in run.out if l.startswith("start")) == 2, "restarted once, for the new value only"
        finally:
            run.stop()
    finally:
        server.stop()


def test_a_kv_event_restarts_the_child_before_the_next_poll(coffer_cli, bao_bin, cofferd, workdir):
    """With the server's events (docs/events.md) the client's kv events wake `coffer run` at once: with
    a 120 s poll interval, the child still sees an overwritten secret within seconds."""
    run_bao(bao_bin, cofferd.addr, "kv", "put", "secret/app", "password=before-event", token="root")
    template, child = setup(workdir, ENV_TEMPLATE)
    run = Run(coffer_cli, ["--address", cofferd.addr, "-t", template, "--poll-interval", "120s", "--",
                           sys.executable, child], child_env())
    try:
        run.wait_line(lambda l: l.startswith("start") and "env=before-event" in l)
        # The client's subscription connects in the background and sees only later writes: write until
        # one reaches the child (each write is an event), well within the grace and the poll interval.
        deadline = time.monotonic() + GRACE_SECONDS
        for attempt in range(GRACE_SECONDS * 2):
            run_bao(bao_bin, cofferd.addr, "kv", "put", "secret/app", f"password=after-event-{attempt}", token="root")
            try:
                run.wait_line(lambda l: l.startswith("start") and "env=after-event" in l, timeout=0.5)
                break
            except AssertionError:
                assert time.monotonic() < deadline, f"no event-driven restart within {GRACE_SECONDS}s: {run.err}"
        else:
            pytest.fail(f"no event-driven restart within {GRACE_SECONDS}s: {run.err}")
    finally:
        run.stop()
