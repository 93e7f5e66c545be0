"""The AWS secrets engine (issue 22, part 3) through the unmodified `bao` CLI, against moto's
standalone server standing in for IAM and STS (AWS itself cannot run here).

moto checks every request Coffer sends: after its setup (motoserver.py) it refuses any call whose
SigV4 signature botocore does not compute the same way (`SignatureDoesNotMatch`) or whose key it
does not know. Everything the tests claim is looked at in moto with boto3: the IAM user exists
with its policies, groups and tags, the issued keys work (`sts get-caller-identity` with them
names the user), and after revoke or expiry the user is gone. OpenBao 2.7 has no aws engine, so
there is no side-by-side comparison; the expected shapes and texts are Vault's (docs/secrets-aws.md).
"""
import json
import os
import re
import tempfile
import time

import botocore.exceptions
import pytest
import requests

from conftest import Server, free_port, run_bao, start_cofferd_dev
from motoserver import ACCOUNT, ALLOW_ALL, MotoServer

POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["ec2:Describe*", "s3:ListAllMyBuckets"], "Resource": "*"}]}, indent=2)
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    # moto checks the trust policy against the caller's own ARN.
    {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/coffer-root"}, "Action": "sts:AssumeRole"}]})
LEASE_SUFFIX = r"[A-Za-z0-9]{24}"


@pytest.fixture(scope="module")
def moto():
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def coffer(cofferd_bin):
    server = start_cofferd_dev(cofferd_bin)
    yield server
    server.stop()


def cli(server, bao_bin, *args, check=True):
    return run_bao(bao_bin, server.addr, *args, token="root", check=check)


def cli_json(server, bao_bin, *args):
    _, out, _ = run_bao(bao_bin, server.addr, *args, token="root", format="json")
    return json.loads(out) if out.strip() else None


def api(server, method, path, body=None):
    r = requests.request(method, f"{server.addr}/v1/{path}", json=body, headers={"X-Vault-Token": "root"}, timeout=60)
    return r.status_code, (r.json() if r.content else None)


def mount(coffer, bao_bin, moto, path, key=None):
    """`bao secrets enable -path=<path> aws` and config/root pointing at moto with `key`."""
    access, secret = key or moto.root
    cli(coffer, bao_bin, "secrets", "enable", f"-path={path}", "aws")
    cli(coffer, bao_bin, "write", f"{path}/config/root", f"access_key={access}", f"secret_key={secret}",
        "region=us-east-1", f"iam_endpoint={moto.url}", f"sts_endpoint={moto.url}", "max_retries=0")


def policy_file():
    f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    f.write(POLICY)
    f.close()
    return f.name


def user_exists(iam, name):
    try:
        iam.get_user(UserName=name)
        return True
    except iam.exceptions.NoSuchEntityException:
        return False


def wait_user_gone(iam, name, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not user_exists(iam, name):
            return True
        time.sleep(0.2)
    return False


def user_of(iam, access_key):
    """The IAM user an access key belongs to, looked up among the users in moto."""
    for user in iam.list_users()["Users"]:
        keys = iam.list_access_keys(UserName=user["UserName"])["AccessKeyMetadata"]
        if any(k["AccessKeyId"] == access_key for k in keys):
            return user
    return None


# ---------------------------------------------------------------------------------------------------
# The done-when: `bao read aws/creds/deploy` makes an IAM user in moto that works, and is gone
# after `bao lease revoke` — and, with a short config/lease, after the lease expires.

def test_creds_make_a_working_iam_user_that_revoke_deletes(coffer, bao_bin, moto):
    iam = moto.client("iam")
    managed = iam.create_policy(PolicyName="ReadOnlyish", PolicyDocument=ALLOW_ALL)["Policy"]["Arn"]
    iam.create_group(GroupName="deployers")
    mount(coffer, bao_bin, moto, "aws")

    config = cli_json(coffer, bao_bin, "read", "aws/config/root")["data"]
    assert config["access_key"] == moto.root[0] and "secret_key" not in config
    assert config["iam_endpoint"] == moto.url and config["region"] == "us-east-1" and config["max_retries"] == 0
    assert moto.root[1] not in json.dumps(config)

    cli(coffer, bao_bin, "write", "aws/roles/deploy", "credential_type=iam_user", f"policy_document=@{policy_file()}",
        f"policy_arns={managed}", "iam_groups=deployers", "iam_tags=team=payments", "user_path=/coffer/")
    role = cli_json(coffer, bao_bin, "read", "aws/roles/deploy")["data"]
    assert role["credential_type"] == "iam_user" and role["policy_arns"] == [managed]
    assert role["policy_document"] == json.dumps(json.loads(POLICY), separators=(",", ":"))  # compacted, in order
    assert role["iam_groups"] == ["deployers"] and role["iam_tags"] == {"team": "payments"}
    assert role["user_path"] == "/coffer/" and role["role_arns"] is None and role["default_sts_ttl"] == 0
    assert cli_json(coffer, bao_bin, "list", "aws/roles") == ["deploy"]

    secret = cli_json(coffer, bao_bin, "read", "aws/creds/deploy")
    assert re.fullmatch(rf"aws/creds/deploy/{LEASE_SUFFIX}", secret["lease_id"]), secret
    assert secret["renewable"] is True and secret["lease_duration"] == 768 * 3600  # no config/lease: the mount's
    data = secret["data"]
    assert sorted(data) == ["access_key", "secret_key", "security_token"] and data["security_token"] is None

    user = user_of(iam, data["access_key"])
    assert user is not None, "no IAM user in moto holds the issued access key"
    name = user["UserName"]
    assert re.fullmatch(r"vault-root-deploy-\d{10}-[A-Za-z0-9]{20}", name), name
    assert user["Path"] == "/coffer/"
    assert iam.list_user_policies(UserName=name)["PolicyNames"] == ["deploy"]
    inline = iam.get_user_policy(UserName=name, PolicyName="deploy")["PolicyDocument"]
    assert inline == json.loads(POLICY)
    assert [p["PolicyArn"] for p in iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]] == [managed]
    assert [g["GroupName"] for g in iam.list_groups_for_user(UserName=name)["Groups"]] == ["deployers"]
    assert iam.list_user_tags(UserName=name)["Tags"] == [{"Key": "team", "Value": "payments"}]

    # The issued key works: STS names the user it belongs to.
    sts = moto.client("sts", data["access_key"], data["secret_key"])
    assert sts.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/coffer/{name}"

    renewed = cli_json(coffer, bao_bin, "lease", "renew", "-increment=1h", secret["lease_id"])
    assert renewed["lease_duration"] == 3600 and renewed["renewable"] is True

    _, out, _ = cli(coffer, bao_bin, "lease", "revoke", "-sync", secret["lease_id"])
    assert "Success! Revoked lease" in out
    assert not user_exists(iam, name), "the IAM user is still in moto after bao lease revoke -sync"
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidClientTokenId"):
        sts.get_caller_identity()
    # The group and the managed policy are the account's, not the credential's: they stay.
    assert iam.get_group(GroupName="deployers")["Users"] == []


def test_short_lease_expires_and_deletes_the_user(coffer, bao_bin, moto):
    iam = moto.client("iam")
    mount(coffer, bao_bin, moto, "aws-short")
    cli(coffer, bao_bin, "write", "aws-short/config/lease", "lease=2s", "lease_max=10s")
    assert cli_json(coffer, bao_bin, "read", "aws-short/config/lease")["data"] == {"lease": "2s", "lease_max": "10s"}
    cli(coffer, bao_bin, "write", "aws-short/roles/deploy", "credential_type=iam_user", f"policy_document={POLICY}")
    issued = time.monotonic()
    secret = cli_json(coffer, bao_bin, "read", "aws-short/creds/deploy")
    assert secret["lease_duration"] == 2 and secret["renewable"] is True
    name = user_of(iam, secret["data"]["access_key"])["UserName"]
    assert wait_user_gone(iam, name, 8.0), f"the IAM user {name} is still in moto 8 s after its 2 s lease"
    assert time.monotonic() - issued >= 1.5
    code, _, err = cli(coffer, bao_bin, "lease", "lookup", secret["lease_id"], check=False)
    assert code != 0 and "invalid lease" in err

    # Renewal stops at lease_max.
    secret = cli_json(coffer, bao_bin, "read", "aws-short/creds/deploy")
    renewed = cli_json(coffer, bao_bin, "lease", "renew", "-increment=1h", secret["lease_id"])
    assert renewed["lease_duration"] <= 10
    cli(coffer, bao_bin, "lease", "revoke", "-sync", secret["lease_id"])


# ---------------------------------------------------------------------------------------------------
# STS: assumed_role and federation_token through aws/sts/<role> (and creds/<role>, as Vault allows).

def test_assumed_role(coffer, bao_bin, moto):
    iam = moto.client("iam")
    role_arn = iam.create_role(RoleName="ops", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    other_arn = iam.create_role(RoleName="other", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    mount(coffer, bao_bin, moto, "aws-sts")
    cli(coffer, bao_bin, "write", "aws-sts/roles/ops", "credential_type=assumed_role", f"role_arns={role_arn}",
        "default_sts_ttl=15m", "max_sts_ttl=1h", f"policy_document={POLICY}")
    role = cli_json(coffer, bao_bin, "read", "aws-sts/roles/ops")["data"]
    assert role["role_arns"] == [role_arn] and role["default_sts_ttl"] == 900 and role["max_sts_ttl"] == 3600

    secret = cli_json(coffer, bao_bin, "read", "aws-sts/sts/ops")
    assert re.fullmatch(rf"aws-sts/sts/ops/{LEASE_SUFFIX}", secret["lease_id"]), secret
    assert secret["renewable"] is False and 895 <= secret["lease_duration"] <= 900
    data = secret["data"]
    assert sorted(data) == ["access_key", "arn", "secret_key", "security_token"] and data["security_token"]
    assert re.fullmatch(rf"arn:aws:sts::{ACCOUNT}:assumed-role/ops/vault-root-ops-\d{{10}}-[A-Za-z0-9]{{20}}",
                        data["arn"]), data["arn"]
    sts = moto.client("sts", data["access_key"], data["secret_key"], data["security_token"])
    assert sts.get_caller_identity()["Arn"] == data["arn"]

    # POST with ttl and role_session_name; a ttl over max_sts_ttl is cut to it, as in Vault.
    written = cli_json(coffer, bao_bin, "write", "aws-sts/sts/ops", "ttl=2h", "role_session_name=alice")
    assert written["data"]["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/ops/alice"
    assert 3595 <= written["lease_duration"] <= 3600
    # creds/ serves STS roles too.
    assert cli_json(coffer, bao_bin, "read", "aws-sts/creds/ops")["data"]["security_token"]

    code, _, err = cli(coffer, bao_bin, "write", "aws-sts/sts/ops", f"role_arn={other_arn}", check=False)
    assert code == 2 and f'role_arn "{other_arn}" not in allowed role arns for Vault role "ops"' in err, err
    # Not renewable; revoking is accepted and leaves the STS credentials to expire by themselves.
    code, _, err = cli(coffer, bao_bin, "lease", "renew", secret["lease_id"], check=False)
    assert code != 0 and "lease is not renewable" in err, err
    cli(coffer, bao_bin, "lease", "revoke", "-sync", secret["lease_id"])


def test_federation_and_session_tokens(coffer, bao_bin, moto):
    mount(coffer, bao_bin, moto, "aws-fed")
    cli(coffer, bao_bin, "write", "aws-fed/roles/fed", "credential_type=federation_token",
        f"policy_document={POLICY}", "default_sts_ttl=20m")
    secret = cli_json(coffer, bao_bin, "read", "aws-fed/sts/fed")
    assert secret["renewable"] is False and 1195 <= secret["lease_duration"] <= 1200
    data = secret["data"]
    assert sorted(data) == ["access_key", "secret_key", "security_token"]
    assert data["access_key"] and data["secret_key"] and data["security_token"]

    # session_token: GetSessionToken for Coffer's own user.
    cli(coffer, bao_bin, "write", "aws-fed/roles/session", "credential_type=session_token", "default_sts_ttl=15m")
    secret = cli_json(coffer, bao_bin, "read", "aws-fed/creds/session")
    assert secret["renewable"] is False and 895 <= secret["lease_duration"] <= 900
    assert sorted(secret["data"]) == ["access_key", "secret_key", "security_token"] and secret["data"]["security_token"]
    code, _, err = cli(coffer, bao_bin, "write", "aws-fed/roles/session2", "credential_type=session_token",
                       f"policy_document={POLICY}", check=False)
    assert code == 2 and "cannot supply a policy or role when using credential_type session_token" in err

    cli(coffer, bao_bin, "write", "aws-fed/roles/bare", "credential_type=federation_token")
    code, _, err = cli(coffer, bao_bin, "read", "aws-fed/sts/bare", check=False)
    assert code == 2 and "must specify at least one of policy_arns or policy_document with federation_token" in err


def test_sts_roles_take_their_groups_policies(coffer, bao_bin, moto):
    """As in Vault, iam_groups on an STS role: the groups' inline policies (read from IAM) are merged into
    the call's Policy and their managed policies added to PolicyArns. A federation_token role with groups
    only would be refused if nothing had been merged."""
    iam = moto.client("iam")
    iam.create_group(GroupName="readers")
    iam.put_group_policy(GroupName="readers", PolicyName="read", PolicyDocument=POLICY)
    managed = iam.create_policy(PolicyName="ReadersManaged", PolicyDocument=ALLOW_ALL)["Policy"]["Arn"]
    iam.attach_group_policy(GroupName="readers", PolicyArn=managed)
    mount(coffer, bao_bin, moto, "aws-groups")
    cli(coffer, bao_bin, "write", "aws-groups/roles/fed", "credential_type=federation_token", "iam_groups=readers")
    assert cli_json(coffer, bao_bin, "read", "aws-groups/sts/fed")["data"]["security_token"]
    cli(coffer, bao_bin, "write", "aws-groups/roles/missing", "credential_type=federation_token", "iam_groups=nobody")
    code, _, err = cli(coffer, bao_bin, "read", "aws-groups/sts/missing", check=False)
    assert code == 2 and "error reading the policies of iam_groups" in err and "NoSuchEntity" in err, err


# ---------------------------------------------------------------------------------------------------
# Bad input: clear 400s, nothing half-written, no secret in any error.

def test_bad_roles_are_refused_and_nothing_is_written(coffer, bao_bin, moto):
    mount(coffer, bao_bin, moto, "aws-bad")
    cases = [
        (["credential_type=iam_token"], "unrecognized credential type: iam_token"),
        (["policy_document={}"], "did not supply credential_type"),
        (["credential_type=assumed_role"], "role_arns must name at least one role to assume"),
        (["credential_type=iam_user", "policy_document={\"Version\": "], "cannot parse policy document"),
        (["credential_type=iam_user", "role_arns=arn:aws:iam::123456789012:role/x"],
         "cannot supply role_arns when credential_type isn't assumed_role"),
        (["credential_type=iam_user", "default_sts_ttl=1h"], "default_sts_ttl parameter only valid for"),
        (["credential_type=assumed_role", "role_arns=arn:aws:iam::1:role/x", "default_sts_ttl=2h", "max_sts_ttl=1h"],
         '\\"default_sts_ttl\\" value must be less than or equal to \\"max_sts_ttl\\" value'),
        (["credential_type=iam_user", "user_path=no-slashes"], "the specified value for user_path is invalid"),
        (["credential_type=iam_user", "permissions_boundary_arn=arn:aws:s3:::bucket"],
         "invalid permissions_boundary_arn parameter"),
    ]
    for args, text in cases:
        code, _, err = cli(coffer, bao_bin, "write", "aws-bad/roles/r", *args, check=False)
        assert code == 2 and "Code: 400" in err and text in err, (args, err)
        status, _ = api(coffer, "GET", "aws-bad/roles/r")
        assert status == 404, f"{args}: a refused write left a role behind"

    # A refused update leaves the stored role as it was.
    cli(coffer, bao_bin, "write", "aws-bad/roles/r", "credential_type=iam_user", f"policy_document={POLICY}")
    before = cli_json(coffer, bao_bin, "read", "aws-bad/roles/r")["data"]
    code, _, _ = cli(coffer, bao_bin, "write", "aws-bad/roles/r", "policy_document=[", check=False)
    assert code == 2
    assert cli_json(coffer, bao_bin, "read", "aws-bad/roles/r")["data"] == before

    code, _, err = cli(coffer, bao_bin, "read", "aws-bad/creds/nope", check=False)
    assert code == 2 and 'Role "nope" not found' in err

    code, _, err = cli(coffer, bao_bin, "write", "aws-bad/config/lease", "lease=1h", check=False)
    assert code == 2 and "'lease_max' is a required parameter" in err
    code, _, err = cli(coffer, bao_bin, "write", "aws-bad/config/lease", "lease=soon", "lease_max=1h", check=False)
    assert code == 2 and "Invalid lease" in err


def test_unreachable_endpoint_and_wrong_secret_name_no_secret(coffer, bao_bin, moto):
    iam = moto.client("iam")
    users_before = {u["UserName"] for u in iam.list_users()["Users"]}
    secret = "Wr0ngSecretKeyThatMustNeverAppear/xyz+abc"
    cli(coffer, bao_bin, "secrets", "enable", "-path=aws-down", "aws")
    cli(coffer, bao_bin, "write", "aws-down/config/root", f"access_key={moto.root[0]}", f"secret_key={secret}",
        "iam_endpoint=http://127.0.0.1:1", "sts_endpoint=http://127.0.0.1:1", "max_retries=0")
    cli(coffer, bao_bin, "write", "aws-down/roles/deploy", "credential_type=iam_user", f"policy_document={POLICY}")
    code, _, err = cli(coffer, bao_bin, "read", "aws-down/creds/deploy", check=False)
    assert code == 2 and "Error creating IAM user" in err and "dial tcp 127.0.0.1:1: connect: connection refused" in err
    assert secret not in err

    # moto reached, but the secret key is wrong: moto's SigV4 check refuses it.
    cli(coffer, bao_bin, "write", "aws-down/config/root", f"iam_endpoint={moto.url}", f"sts_endpoint={moto.url}")
    code, _, err = cli(coffer, bao_bin, "read", "aws-down/creds/deploy", check=False)
    assert code == 2 and "SignatureDoesNotMatch" in err and "status code: 403" in err, err
    assert secret not in err
    assert {u["UserName"] for u in iam.list_users()["Users"]} == users_before, "a refused request left a user"

    # A failure half-way (a managed policy that does not exist) deletes the user it had made.
    cli(coffer, bao_bin, "write", "aws-down/config/root", f"secret_key={moto.root[1]}")
    cli(coffer, bao_bin, "write", "aws-down/roles/broken", "credential_type=iam_user",
        f"policy_arns=arn:aws:iam::{ACCOUNT}:policy/DoesNotExist")
    code, _, err = cli(coffer, bao_bin, "read", "aws-down/creds/broken", check=False)
    assert code == 2 and "Error attaching user policy" in err, err
    assert {u["UserName"] for u in iam.list_users()["Users"]} == users_before, "a failed issue left a user behind"
    assert moto.root[1] not in err


def test_a_half_made_user_that_cannot_be_deleted_is_named(coffer, bao_bin, moto):
    """The clean-up after a failed issue is itself refused (a key that may not iam:DeleteUser): the error
    names the user left behind. (Its write-ahead entry stays; AWSTests.swift checks it is deleted later.)"""
    iam = moto.client("iam")
    iam.create_user(UserName="nodelete")
    iam.put_user_policy(UserName="nodelete", PolicyName="all", PolicyDocument=ALLOW_ALL)
    iam.put_user_policy(UserName="nodelete", PolicyName="deny", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "iam:DeleteUser", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="nodelete")["AccessKey"]
    mount(coffer, bao_bin, moto, "aws-nodelete", key=(key["AccessKeyId"], key["SecretAccessKey"]))
    cli(coffer, bao_bin, "write", "aws-nodelete/roles/broken", "credential_type=iam_user",
        f"policy_arns=arn:aws:iam::{ACCOUNT}:policy/DoesNotExist")
    before = {u["UserName"] for u in iam.list_users()["Users"]}
    code, _, err = cli(coffer, bao_bin, "read", "aws-nodelete/creds/broken", check=False)
    left = {u["UserName"] for u in iam.list_users()["Users"]} - before
    assert len(left) == 1, left
    name = left.pop()
    assert code == 2 and "Error attaching user policy" in err, err
    assert f"deleting the half-made IAM user {name} failed too (Coffer tries again after 5 minutes)" in err and "AccessDenied" in err, err
    iam.delete_user(UserName=name)


# ---------------------------------------------------------------------------------------------------
# config/rotate-root: a new key, the old one deleted, the new one used (and moto accepts its signatures).

def test_rotate_root(coffer, bao_bin, moto):
    iam = moto.client("iam")
    iam.create_user(UserName="rotator")
    iam.put_user_policy(UserName="rotator", PolicyName="all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName="rotator")["AccessKey"]
    old = (key["AccessKeyId"], key["SecretAccessKey"])
    mount(coffer, bao_bin, moto, "aws-rot", key=old)

    rotated = cli_json(coffer, bao_bin, "write", "-f", "aws-rot/config/rotate-root")
    new_id = rotated["data"]["access_key"]
    assert sorted(rotated["data"]) == ["access_key"] and new_id != old[0]
    assert cli_json(coffer, bao_bin, "read", "aws-rot/config/root")["data"]["access_key"] == new_id
    keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName="rotator")["AccessKeyMetadata"]]
    assert keys == [new_id], keys
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidClientTokenId"):
        moto.client("iam", *old).get_user()

    # The new key works: Coffer makes (and deletes) a user with it.
    cli(coffer, bao_bin, "write", "aws-rot/roles/deploy", "credential_type=iam_user", f"policy_document={POLICY}")
    secret = cli_json(coffer, bao_bin, "read", "aws-rot/creds/deploy")
    name = user_of(iam, secret["data"]["access_key"])["UserName"]
    cli(coffer, bao_bin, "lease", "revoke", "-sync", secret["lease_id"])
    assert not user_exists(iam, name)

    cli(coffer, bao_bin, "secrets", "enable", "-path=aws-nokey", "aws")
    cli(coffer, bao_bin, "write", "aws-nokey/config/root", "region=us-east-1")
    code, _, err = cli(coffer, bao_bin, "write", "-f", "aws-nokey/config/rotate-root", check=False)
    assert code == 2 and "Cannot call config/rotate-root when either access_key or secret_key is empty" in err


# ---------------------------------------------------------------------------------------------------
# Temporary (session) credentials from cofferd's environment: every call carries X-Amz-Security-Token
# in the signature, and moto checks it.

def test_session_credentials_from_the_environment(cofferd_bin, bao_bin, moto):
    iam = moto.client("iam")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/inspector"}}]})
    iam.create_role(RoleName="coffer-runtime", AssumeRolePolicyDocument=trust)
    iam.put_role_policy(RoleName="coffer-runtime", PolicyName="all", PolicyDocument=ALLOW_ALL)
    assumed = moto.client("sts").assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/coffer-runtime",
                                             RoleSessionName="cofferd")["Credentials"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=assumed["AccessKeyId"], AWS_SECRET_ACCESS_KEY=assumed["SecretAccessKey"],
               AWS_SESSION_TOKEN=assumed["SessionToken"])
    addr = f"127.0.0.1:{free_port()}"
    server = Server([cofferd_bin, "-dev", "-dev-root-token-id=root", f"-dev-listen-address={addr}"], addr, env=env)
    try:
        cli(server, bao_bin, "secrets", "enable", "aws")
        cli(server, bao_bin, "write", "aws/config/root", f"iam_endpoint={moto.url}", f"sts_endpoint={moto.url}")
        cli(server, bao_bin, "write", "aws/roles/deploy", "credential_type=iam_user", f"policy_document={POLICY}")
        secret = cli_json(server, bao_bin, "read", "aws/creds/deploy")
        name = user_of(iam, secret["data"]["access_key"])["UserName"]
        cli(server, bao_bin, "lease", "revoke", "-sync", secret["lease_id"])
        assert not user_exists(iam, name)
        # moto refuses the key pair without its token: Coffer's calls did carry (and sign) it.
        with pytest.raises(botocore.exceptions.ClientError):
            moto.client("iam", assumed["AccessKeyId"], assumed["SecretAccessKey"]).list_users()
    finally:
        server.stop()
