"""A real PostgreSQL of our own for the database engine's tests (issue 15): the Python twin of
Tests/Support/DatabaseServers.swift's PostgresServer.

`initdb` in a temporary directory, the server on 127.0.0.1 on a free port (and a unix socket in that
directory), `scram-sha-256` over TCP for the superuser `postgres`, fsync off. PostgreSQL refuses to run
as root, so when we are root the cluster belongs to, and the server runs as, the `postgres` system user
(`setpriv --reuid=postgres --regid=postgres --init-groups`).

Used by Tests/compat/conftest.py (the `postgres` fixture) and, standalone, by the Makefile's
`test-bindings` recipe:

    python3 Tests/compat/pgserver.py start [DIR]   # prints COFFER_TEST_PG_* assignments for `eval`; pid file in DIR
    python3 Tests/compat/pgserver.py stop DIR      # stops that server (by its pid) and removes DIR
"""
import os
import pwd
import shlex
import signal
import subprocess
import sys
import tempfile
import time

from ports import free_port

PSQL = "/usr/bin/psql"
DEFAULT_PASSWORD = "coffer-postgres-password"


def _bin_directory():
    root = "/usr/lib/postgresql"
    versions = sorted(int(v) for v in (os.listdir(root) if os.path.isdir(root) else []) if v.isdigit())
    for v in reversed(versions):
        if os.access(f"{root}/{v}/bin/postgres", os.X_OK):
            return f"{root}/{v}/bin"
    raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql: install postgresql (make deps does)")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class PostgresServer:
    superuser = "postgres"

    def __init__(self, directory=None, password=DEFAULT_PASSWORD, port=None):
        self.bin = _bin_directory()
        self.password = password
        self.port = port or free_port()
        self.directory = directory or tempfile.mkdtemp(prefix="coffer-pg-")
        os.makedirs(self.directory, exist_ok=True)
        self.as_root = os.geteuid() == 0
        if self.as_root:
            os.chmod(self.directory, 0o755)
            entry = pwd.getpwnam("postgres")
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self.proc = None
        self.pid = None

    # -- paths and URLs
    @property
    def data_directory(self):
        return os.path.join(self.directory, "data")

    @property
    def log_file(self):
        return os.path.join(self.directory, "postgres.log")

    @property
    def pid_file(self):
        return os.path.join(self.directory, "server.pid")

    @property
    def url_template(self):
        """A libpq URI with Vault's templates, for a database config's `connection_url`."""
        return f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def _argv(self, tool, args):
        path = os.path.join(self.bin, tool)
        if self.as_root:
            return ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", path, *args]
        return [path, *args]

    def _env(self):
        return dict(os.environ, HOME=self.directory, LC_ALL="C", LANG="C")

    def _chown(self, path):
        if self.as_root:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- lifecycle
    def initialize(self):
        pwfile = os.path.join(self.directory, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        self._chown(pwfile)
        try:
            p = subprocess.run(self._argv("initdb", [
                "-D", self.data_directory, "-U", self.superuser, f"--pwfile={pwfile}", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]),
                env=self._env(), cwd=self.directory, capture_output=True, text=True, timeout=120)
        finally:
            os.unlink(pwfile)
        if p.returncode != 0:
            raise RuntimeError(f"initdb failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")

    def start(self, detach=False):
        """Starts the server (the cluster must exist) and waits until it accepts connections."""
        try:
            os.unlink(os.path.join(self.data_directory, "postmaster.pid"))
        except FileNotFoundError:
            pass
        log = open(self.log_file, "a")
        self._chown(self.log_file)
        self.proc = subprocess.Popen(self._argv("postgres", [
            "-D", self.data_directory, "-p", str(self.port), "-k", self.directory,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "max_connections=60", "-c", "shared_buffers=16MB",
            "-c", "password_encryption=scram-sha-256"]),
            env=self._env(), cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=detach)
        log.close()
        self.pid = self.proc.pid  # setpriv execs postgres: same pid
        with open(self.pid_file, "w") as f:
            f.write(f"{self.pid}\n{self.port}\n")
        deadline = time.monotonic() + 30
        pidfile = os.path.join(self.data_directory, "postmaster.pid")
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited while starting ({self.proc.returncode}):\n{self.output()}")
            try:
                with open(pidfile) as f:
                    text = f.read()
                if len(text.splitlines()) >= 8 and "ready" in text:
                    return self
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not become ready within 30 s:\n{self.output()}")
            time.sleep(0.02)

    @classmethod
    def create(cls, directory=None, password=DEFAULT_PASSWORD, detach=False):
        server = cls(directory, password)
        server.initialize()
        return server.start(detach=detach)

    def stop(self):
        """Fast shutdown (SIGINT: open connections are closed), by pid; SIGKILL after 20 s."""
        pid = self.pid
        if pid is None:
            return
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        else:
            _stop_pid(pid)
        self.proc = None
        self.pid = None

    def restart(self):
        self.stop()
        return self.start()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def output(self):
        try:
            with open(self.log_file, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- the real client
    def psql_result(self, sql, user=None, password=None, database="postgres"):
        env = dict(os.environ, PGPASSWORD=password if password is not None else self.password,
                   PGCONNECT_TIMEOUT="5", PGSSLMODE="disable", PSQLRC="/dev/null")
        return subprocess.run([PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                               "-p", str(self.port), "-U", user or self.superuser, "-d", database, "-c", sql],
                              env=env, capture_output=True, text=True, timeout=30)

    def psql(self, sql, user=None, password=None, database="postgres"):
        """Runs `sql` as `user` (the superuser by default); returns the trimmed unaligned output."""
        p = self.psql_result(sql, user, password, database)
        if p.returncode != 0:
            raise RuntimeError(f"psql as {user or self.superuser} failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout.strip()

    def role_exists(self, name):
        return self.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{name}'") == "1"

    def can_login(self, user, password):
        p = self.psql_result("SELECT current_user", user=user, password=password)
        return p.returncode == 0 and p.stdout.strip() == user

    def wait_role_gone(self, name, seconds=6.0):
        """Polls pg_roles until `name` is gone; returns the seconds it took, or None if it is still there."""
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if not self.role_exists(name):
                return time.monotonic() - start
            time.sleep(0.1)
        return None if self.role_exists(name) else time.monotonic() - start


def _stop_pid(pid, seconds=20):
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + seconds
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main(argv):
    if len(argv) >= 2 and argv[1] == "start":
        directory = argv[2] if len(argv) > 2 else None
        server = PostgresServer.create(directory, detach=True)
        values = {
            "COFFER_TEST_PG_DIR": server.directory,
            "COFFER_TEST_PG_URL": server.url_template,
            "COFFER_TEST_PG_PORT": str(server.port),
            "COFFER_TEST_PG_USER": server.superuser,
            "COFFER_TEST_PG_PASSWORD": server.password,
        }
        for k, v in values.items():
            print(f"{k}={shlex.quote(v)}")
        return 0
    if len(argv) == 3 and argv[1] == "stop":
        directory = argv[2]
        pidfile = os.path.join(directory, "server.pid")
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                _stop_pid(int(f.readline()))
        import shutil
        shutil.rmtree(directory, ignore_errors=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
