"""Identity, as much as logins need (issue 17 item 5), against OpenBao 2.7.2's observed behaviour
(/work/shared/design/LEASES-DATABASE-PKI.md §5): entities and aliases at identity/, logins that find
or create their entity, and entity policies joining the token's. Each test runs against
`bao server -dev` and `cofferd -dev` with the same expectations."""
import re

import pytest

from authtools import KINDS, as_client, enable_auth, error, kv_put, login, put_policy, server_param

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ENTITY_KEYS = ["aliases", "creation_time", "direct_group_ids", "disabled", "group_ids", "id", "inherited_group_ids",
               "last_update_time", "merged_entity_ids", "metadata", "name", "namespace_id", "policies"]
ALIAS_KEYS = ["canonical_id", "creation_time", "custom_metadata", "id", "last_update_time", "local", "merged_from_canonical_ids",
              "metadata", "mount_accessor", "mount_path", "mount_type", "name"]


@pytest.fixture(scope="module", params=KINDS)
def srv(request, bao_bin):
    api = server_param(request, bao_bin)
    put_policy(api, "dbuser", 'path "secret/data/db/*" { capabilities = ["read"] }\n')
    kv_put(api, "db/creds", {"password": "db-creds"})
    yield api
    api.close()


def test_entities(srv):
    created = srv.data("POST", "identity/entity", {"name": "alice", "policies": ["dbuser"], "metadata": {"team": "core"}})
    assert sorted(created) == ["aliases", "id", "name"] and created["name"] == "alice" and created["aliases"] is None, created
    assert re.fullmatch(UUID, created["id"]), created
    assert srv("POST", "identity/entity", {"name": "alice", "metadata": {"team": "x"}}) == (204, None)  # same name: update

    entity = srv.data("GET", "identity/entity/name/alice")
    assert sorted(entity) == ENTITY_KEYS, sorted(entity)
    assert entity == srv.data("GET", f"identity/entity/id/{created['id']}")
    assert entity["metadata"] == {"team": "x"} and entity["policies"] == ["dbuser"] and entity["namespace_id"] == "root"
    assert srv("GET", "identity/entity/name/nobody") == (404, {"errors": []})
    listed = srv.data("LIST", "identity/entity/id")
    assert created["id"] in listed["keys"] and listed["key_info"][created["id"]]["name"] == "alice", listed
    assert "alice" in srv.data("LIST", "identity/entity/name")["keys"]
    assert srv.data("POST", "identity/lookup/entity", {"name": "alice"})["id"] == created["id"]


def test_entity_aliases(srv):
    accessor = enable_auth(srv, "userpass", "id-up")
    assert re.fullmatch(r"auth_userpass_[0-9a-f]{8}", accessor), accessor
    created = srv.data("POST", "identity/entity", {"name": "dana"})
    alias = srv.data("POST", "identity/entity-alias", {"name": "dana", "canonical_id": created["id"], "mount_accessor": accessor})
    assert sorted(alias) == ["canonical_id", "id"] and alias["canonical_id"] == created["id"], alias
    assert error(srv, "POST", "identity/entity-alias", {"name": "x", "canonical_id": created["id"],
                                                        "mount_accessor": "auth_nope_1"}) == (400, 'invalid mount accessor "auth_nope_1"')
    entity = srv.data("GET", f"identity/entity/id/{created['id']}")
    assert [sorted(a) for a in entity["aliases"]] == [ALIAS_KEYS], entity["aliases"]
    a = entity["aliases"][0]
    assert (a["name"], a["mount_type"], a["mount_path"], a["mount_accessor"]) == ("dana", "userpass", "auth/id-up/", accessor), a
    info = srv.data("LIST", "identity/entity/id")["key_info"][created["id"]]
    assert [(x["name"], x["mount_type"]) for x in info["aliases"]] == [("dana", "userpass")], info


def test_login_attaches_the_entity_and_its_policies(srv):
    accessor = enable_auth(srv, "userpass", "id-login")
    srv.ok("POST", "auth/id-login/users/bob", {"password": "bob-pw", "token_policies": ["default"]}, status=204)
    srv.ok("POST", "auth/id-login/users/carol", {"password": "carol-pw", "token_policies": ["default"]}, status=204)
    bob = srv.data("POST", "identity/entity", {"name": "bob", "policies": ["dbuser"]})
    srv.data("POST", "identity/entity-alias", {"name": "bob", "canonical_id": bob["id"], "mount_accessor": accessor})

    code, answer = login(srv, "auth/id-login/login/bob", {"password": "bob-pw"})
    assert code == 200, answer
    auth = answer["auth"]
    assert auth["entity_id"] == bob["id"], auth
    assert auth["policies"] == ["dbuser", "default"] and auth["token_policies"] == ["default"], auth
    assert auth["identity_policies"] == ["dbuser"], auth
    assert as_client(srv, auth["client_token"]).data("GET", "secret/data/db/creds")["data"] == {"password": "db-creds"}

    # No alias yet: an entity is made, named entity_<8 hex>, with an alias named after the user.
    code, answer = login(srv, "auth/id-login/login/carol", {"password": "carol-pw"})
    assert code == 200, answer
    carol = srv.data("GET", f"identity/entity/id/{answer['auth']['entity_id']}")
    assert re.fullmatch(r"entity_[0-9a-f]{8}(\.root)?", carol["name"]), carol["name"]
    assert [(a["name"], a["mount_accessor"]) for a in carol["aliases"]] == [("carol", accessor)], carol
    assert as_client(srv, answer["auth"]["client_token"])("GET", "secret/data/db/creds")[0] == 403

    # Policies added to the entity apply to the token already issued (at request time).
    srv.ok("POST", f"identity/entity/id/{carol['id']}", {"policies": ["dbuser"]}, status=(200, 204))
    assert as_client(srv, answer["auth"]["client_token"])("GET", "secret/data/db/creds")[0] == 200
