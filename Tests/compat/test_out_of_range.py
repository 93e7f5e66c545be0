"""Issue 13's crash reproductions over HTTP: cofferd answers 400 naming the field and its limit, and
lives on. Before the fix the first made every later write to the secret trap the server."""
import requests


def test_out_of_range_durations_are_400_and_cofferd_lives_on(cofferd_dev):
    a = cofferd_dev.addr + "/v1/"
    root = {"X-Vault-Token": "root"}
    r = requests.put(a + "secret/metadata/range/x", json={"delete_version_after": 10000000000}, headers=root)
    assert r.status_code == 400, r.text
    assert "delete_version_after" in r.json()["errors"][0] and "3153600000" in r.json()["errors"][0]
    r = requests.post(a + "auth/token/create", json={"ttl": "99999999999999999999h"}, headers=root)
    assert r.status_code == 400 and "ttl" in r.json()["errors"][0]
    r = requests.put(a + "secret/data/range/x", json={"data": {"k": "v"}}, headers=root)
    assert r.status_code == 200, r.text
    assert requests.get(a + "secret/data/range/x", headers=root).json()["data"]["data"] == {"k": "v"}
    assert cofferd_dev.proc.poll() is None, "cofferd is still running"
