"""cofferd killed with SIGKILL keeps every acknowledged write, and opens again after the crash.

The state a kill leaves behind is built for real: cofferd writes through its SQLite file in WAL mode
and is killed with SIGKILL, so the write-ahead log holds the newest pages. A checkpoint interrupted
by the crash is then reproduced byte for byte: SQLite's checkpoint writes page 1 (whose header
carries the new page count) before the pages it counts, so the main file's header describes more
pages than the file holds. `sqlite3` opens that state with `PRAGMA integrity_check` = ok; so must
cofferd, without telling the operator to restore a backup.
"""
import os
import shutil
import signal
import sqlite3
import struct
import subprocess

import requests

from conftest import start_cofferd_config

CONFIG = """
storage "sqlite" {{ path = "{dir}/coffer.db" }}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
"""


def newest_committed_page_one(wal_path):
    """The newest committed frame of page 1 in a WAL file (bytes of one page), per the WAL format."""
    with open(wal_path, "rb") as f:
        wal = f.read()
    assert len(wal) > 32, "the WAL is empty: nothing was left for recovery"
    page_size = struct.unpack(">I", wal[8:12])[0]
    salts = wal[16:24]
    newest, candidate, offset = None, None, 32
    while offset + 24 + page_size <= len(wal):
        page_number, db_size = struct.unpack(">II", wal[offset:offset + 8])
        if wal[offset + 8:offset + 16] != salts:
            break  # frames of an older WAL generation
        if page_number == 1:
            candidate = wal[offset + 24:offset + 24 + page_size]
        if db_size != 0:  # a commit frame: what came before it is committed
            newest = candidate
        offset += 24 + page_size
    assert newest is not None, "no committed frame of page 1 in the WAL"
    return newest, page_size


def test_open_after_kill_during_checkpoint(cofferd_bin, workdir):
    server = start_cofferd_config(cofferd_bin, CONFIG, workdir)
    a = server.addr + "/v1/"
    try:
        init = requests.put(a + "sys/init", json={"secret_shares": 1, "secret_threshold": 1}).json()
        key, root = init["keys"][0], {"X-Vault-Token": init["root_token"]}
        assert requests.put(a + "sys/unseal", json={"key": key}).json()["sealed"] is False
        assert requests.post(a + "sys/mounts/secret", json={"type": "kv", "options": {"version": "2"}},
                             headers=root).status_code == 204
        written = {}
        for i in range(150):
            value = f"value-{i}-" + "x" * 500
            r = requests.put(a + f"secret/data/crash/{i}", json={"data": {"v": value}}, headers=root)
            assert r.status_code == 200, r.text
            written[i] = value
        server.signal(signal.SIGKILL)
        server.proc.wait()
    finally:
        server.stop()

    db, wal = os.path.join(workdir, "coffer.db"), os.path.join(workdir, "coffer.db-wal")
    page, page_size = newest_committed_page_one(wal)
    with open(db, "r+b") as f:  # the checkpoint's first write, then the crash
        f.write(page)
    header_pages = struct.unpack(">I", page[28:32])[0]
    assert os.path.getsize(db) < header_pages * page_size, "the state under test: the header counts pages the file lacks"

    # The reference: SQLite itself recovers this state (checked on a copy, so cofferd meets it untouched).
    probe = os.path.join(workdir, "probe")
    os.mkdir(probe)
    for name in ("coffer.db", "coffer.db-wal"):
        shutil.copy(os.path.join(workdir, name), probe)
    check = subprocess.run(["sqlite3", os.path.join(probe, "coffer.db"), "PRAGMA integrity_check;"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "ok", check.stdout + check.stderr

    server = start_cofferd_config(cofferd_bin, CONFIG, workdir)
    try:
        a = server.addr + "/v1/"
        status = requests.put(a + "sys/unseal", json={"key": key}).json()
        assert status["sealed"] is False, status
        for i, value in written.items():
            r = requests.get(a + f"secret/data/crash/{i}", headers=root)
            assert r.status_code == 200 and r.json()["data"]["data"]["v"] == value, (i, r.text)
        assert "restore it from a backup" not in server.output()
    finally:
        server.stop()
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
