"""The wheel that `make wheel` builds, as a user gets it: installed with `pip install --no-index` into a
new virtual environment and used with neither COFFER_LIBRARY nor LD_LIBRARY_PATH set. `make test-bindings`
builds it and names it in COFFER_TEST_WHEEL; a missing variable fails the test: it is not skipped."""

import ctypes.util
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

LIBRARY = "coffer/libcoffer.so.0"

# Runs in the new environment, from a directory outside the repository. It prints what it saw as JSON.
USE = r"""
import json, sys
import coffer

config = {"storage": {"type": "sqlite", "path": sys.argv[1]}}
seen = {"library_path": coffer.library_path(), "package": coffer.__file__,
        "mapped": sorted({line.split()[-1] for line in open("/proc/self/maps") if "libcoffer" in line}),
        "version": coffer.version()}
with coffer.open(config) as vault:
    init = vault.request("PUT", "sys/init", body={"secret_shares": 1, "secret_threshold": 1}).body
    try:
        vault.kv.get("app/db", token=init["root_token"])
    except coffer.CofferError as error:
        seen["sealed"] = [type(error).__name__, error.code, str(error)]
    vault.request("PUT", "sys/unseal", body={"key": init["keys"][0]})
    vault.token = init["root_token"]
    vault.request("POST", "sys/mounts/secret", body={"type": "kv", "options": {"version": "2"}})
    seen["put"] = vault.kv.put("app/db", {"password": "s3cret"})
    secret = vault.kv.get("app/db")
    seen["get"] = [secret.data, secret.version]
    for name, call in [("missing", lambda: vault.kv.get("app/nothing")),
                       ("denied", lambda: vault.kv.get("app/db", token="not-a-token"))]:
        try:
            call()
        except coffer.CofferError as error:
            seen[name] = [type(error).__name__, error.code, str(error), isinstance(error, LookupError),
                          isinstance(error, PermissionError)]
seen["closed"] = vault.closed
print(json.dumps(seen))
"""

# What a user's type checker sees of the installed package (PEP 561: py.typed).
TYPED_OK = """
import coffer

with coffer.open({"dev": True}, token="root") as vault:
    version: int = vault.kv.put("app", {"a": "b"})
    secret: coffer.KVSecret = vault.kv.get("app")
    data: dict[str, object] = secret.data
    error: type[coffer.CofferError] = coffer.error_class(-4)
"""
TYPED_WRONG = """
import coffer

with coffer.open({"dev": True}) as vault:
    version: str = vault.kv.put("app", {"a": "b"})
"""


@pytest.fixture(scope="module")
def wheel():
    path = os.environ.get("COFFER_TEST_WHEEL")
    if not path:
        pytest.fail("COFFER_TEST_WHEEL not set: run through `make test-bindings`, which builds the wheel", pytrace=False)
    return Path(path).resolve()


def user_env(**extra):
    """The environment of a user who set nothing for Coffer."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("COFFER_LIBRARY", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MYPYPATH")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A new virtual environment with the wheel installed from the file alone (no index)."""
    root = tmp_path_factory.mktemp("wheel-venv")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120, env=user_env())
    python = root / "venv" / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-index", "--no-deps", str(wheel)],
                               capture_output=True, text=True, timeout=120, env=user_env(), cwd=root)
    assert installed.returncode == 0, installed.stderr
    return python


def run(python, code, *args, cwd, **env):
    return subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=user_env(**env))


def test_the_wheel_is_a_platform_wheel_that_carries_the_library(wheel):
    machine = platform.machine()
    assert wheel.name == f"coffer-0.1.0-py3-none-linux_{machine}.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read("coffer-0.1.0.dist-info/WHEEL").decode()
        library = z.read(LIBRARY)
        mode = z.getinfo(LIBRARY).external_attr >> 16
    assert {"coffer/__init__.py", "coffer/_native.py", "coffer/py.typed", LIBRARY} <= names
    assert [n for n in names if ".so" in n] == [LIBRARY]
    assert "Root-Is-Purelib: false" in metadata.splitlines()
    assert f"Tag: py3-none-linux_{machine}" in metadata.splitlines()
    assert library[:4] == b"\x7fELF" and b"libcoffer.so.0\x00" in library and b"coffer_kv_get\x00" in library
    assert mode & 0o111, "the library is installed executable, as shared libraries are"


def test_installed_without_environment_variables_it_uses_the_library_inside_the_package(wheel, venv, tmp_path):
    result = run(venv, USE, str(tmp_path / "coffer.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    package = Path(seen["package"]).parent
    # The package and its library are the installed ones, inside the new environment.
    assert package.is_relative_to(venv.parent.parent) and package.parent.name == "site-packages"
    assert seen["library_path"] == str(package / "libcoffer.so.0")
    # The one file the process mapped is that copy, byte for byte the wheel's: no system libcoffer.
    assert seen["mapped"] == [str(package / "libcoffer.so.0")]
    with zipfile.ZipFile(wheel) as z:
        shipped = hashlib.sha256(z.read(LIBRARY)).hexdigest()
    assert hashlib.sha256(Path(seen["mapped"][0]).read_bytes()).hexdigest() == shipped

    assert seen["version"] == "0.1.0"
    assert seen["sealed"] == ["SealedError", -2, "Vault is sealed"]
    assert seen["put"] == 1 and seen["get"] == [{"password": "s3cret"}, 1]
    assert seen["missing"][:2] == ["NotFoundError", -4] and "secret/app/nothing" in seen["missing"][2]
    assert seen["missing"][3] is True  # a NotFoundError is also a KeyError
    assert seen["denied"] == ["PermissionDeniedError", -3, "permission denied", False, True]
    assert seen["closed"] is True


def test_coffer_library_is_still_preferred_over_the_bundled_copy(venv, tmp_path):
    staged = os.environ.get("COFFER_LIBRARY")
    if not staged:
        pytest.fail("COFFER_LIBRARY not set: make test-bindings names the staged library in it", pytrace=False)
    code = "import coffer, json; print(json.dumps([coffer.library_path(), coffer.version()]))"
    result = run(venv, code, cwd=tmp_path, COFFER_LIBRARY=staged)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [os.path.abspath(staged), "0.1.0"]

    missing = run(venv, "import coffer", cwd=tmp_path, COFFER_LIBRARY=str(tmp_path / "nowhere.so"))
    assert "ImportError: coffer: cannot load libcoffer; tried" in missing.stderr
    assert f"{tmp_path / 'nowhere.so'} ($COFFER_LIBRARY)" in missing.stderr
    assert "the copy inside the package" not in missing.stderr  # an explicit choice is not second-guessed


def installed_package(venv):
    located = run(venv, "import coffer, os; print(os.path.dirname(coffer.__file__))", cwd=venv.parent)
    assert located.returncode == 0, located.stderr
    return Path(located.stdout.strip())


def test_a_corrupt_bundled_library_is_an_import_error_naming_it(venv, tmp_path):
    copy = tmp_path / "site" / "coffer"
    shutil.copytree(installed_package(venv), copy)
    (copy / "libcoffer.so.0").write_bytes(b"not a shared library\n" * 10)
    result = run(venv, "import coffer", cwd=tmp_path, PYTHONPATH=str(copy.parent))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: coffer: cannot load libcoffer; tried ")
    assert f"{copy / 'libcoffer.so.0'} (the copy inside the package): " in last and "invalid ELF header" in last
    assert "the system library path" not in last  # a broken copy is reported, not replaced by another


def test_without_a_bundled_library_it_falls_back_to_the_system_path(venv, tmp_path):
    copy = tmp_path / "site" / "coffer"
    shutil.copytree(installed_package(venv), copy)
    (copy / "libcoffer.so.0").unlink()
    result = run(venv, "import coffer; print(coffer.library_path())", cwd=tmp_path, PYTHONPATH=str(copy.parent))
    system = ctypes.util.find_library("coffer")
    if system is None:  # this machine has no libcoffer installed: the error lists each place looked at
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert "$COFFER_LIBRARY: not set" in last
        assert f"{copy / 'libcoffer.so.0'} (the copy inside the package): not there" in last
        assert "libcoffer.so.0 (the system library path): libcoffer.so.0: cannot open shared object file" in last
    else:  # step 3 of the order: the system's copy, wherever the loader found it
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip()).name.startswith("libcoffer.so")
        assert not Path(result.stdout.strip()).is_relative_to(copy)


def test_a_type_checker_sees_the_installed_package_types(venv, tmp_path):
    """mypy --strict, pointed at the new environment's interpreter, finds the wheel's py.typed."""
    (tmp_path / "ok.py").write_text(TYPED_OK)
    (tmp_path / "wrong.py").write_text(TYPED_WRONG)
    mypy = [sys.executable, "-m", "mypy", "--strict", "--python-executable", str(venv), "--cache-dir",
            str(tmp_path / ".mypy_cache"), "--no-error-summary"]
    ok = subprocess.run(mypy + ["ok.py"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=user_env())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = subprocess.run(mypy + ["wrong.py"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           env=user_env())
    assert wrong.returncode == 1
    assert wrong.stdout.strip() == ('wrong.py:5: error: Incompatible types in assignment (expression has type "int", '
                                    'variable has type "str")  [assignment]')
