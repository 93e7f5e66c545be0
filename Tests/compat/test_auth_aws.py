"""AWS IAM auth (issue 22 part 2): `aws` auth method, `iam` login, against cofferd only.

There is no reference server: neither OpenBao 2.7.2 nor 2.6.2 ships an aws auth method (their CLI
answers "Unknown auth method: aws"), so the expectations are Vault's documented API and the texts of
Vault's source (builtin/credential/aws/path_login.go). AWS cannot run here: moto's standalone server
is the stand-in for STS and IAM, started on a free loopback port with signature checking on
(`INITIAL_NO_AUTH_ACTION_COUNT`: after the first few calls every request must be signed by a key moto
knows, so a forged or tampered GetCallerIdentity is refused by "STS" itself).

The clients are the real ones: hvac's `auth.aws.iam_login` (signs with its own SigV4 code) and the
unmodified bao CLI's generic `bao write auth/aws/login ...` with a request signed here by botocore.
"""
import base64
import http.server
import json
import os
import subprocess
import threading
import time

import hvac
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from authtools import Cli
from conftest import free_port, start_cofferd_config, start_cofferd_dev

ACCOUNT = "123456789012"
SERVER_ID = "coffer-test.example"
BODY = "Action=GetCallerIdentity&Version=2011-06-15"
MOTO = os.path.join(os.path.dirname(os.environ.get("COFFER_BAO", "/work/main/.venv/bin/bao")), "moto_server")
APP_POLICY = 'path "secret/data/app/*" { capabilities = ["read"] }\n'
ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/admin"}, "Action": "sts:AssumeRole"}]})


class Moto:
    """moto_server on a free loopback port with request signatures checked; stopped by pid."""

    def __init__(self):
        import boto3
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Four unsigned calls make the admin user and its key; every later call must be signed.
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4")
        self.proc = subprocess.Popen([MOTO if os.path.exists(MOTO) else "moto_server", "-H", "127.0.0.1", "-p",
                                      str(self.port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._set_up(boto3)
        except BaseException:
            self.stop()
            raise

    def _set_up(self, boto3):
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        anon = self.client(boto3, "iam", "anon", "anon")
        self.policy = anon.create_policy(PolicyName="all", PolicyDocument=ALL)["Policy"]["Arn"]
        anon.create_user(UserName="admin")
        anon.attach_user_policy(UserName="admin", PolicyArn=self.policy)
        key = anon.create_access_key(UserName="admin")["AccessKey"]
        self.admin = (key["AccessKeyId"], key["SecretAccessKey"])
        self.iam = self.client(boto3, "iam", *self.admin)
        self.boto3 = boto3

    def client(self, boto3, service, key, secret, token=None):
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=key,
                            aws_secret_access_key=secret, aws_session_token=token)

    def user(self, name, path="/"):
        """An IAM user allowed everything, with an access key: (arn, unique id, key id, secret)."""
        user = self.iam.create_user(UserName=name, Path=path)["User"]
        self.iam.attach_user_policy(UserName=name, PolicyArn=self.policy)
        key = self.iam.create_access_key(UserName=name)["AccessKey"]
        return user["Arn"], user["UserId"], key["AccessKeyId"], key["SecretAccessKey"]

    def assumed_role(self, name, session, path="/"):
        """A role allowed everything, assumed by the admin: (role arn, role id, key id, secret, session token)."""
        role = self.iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=TRUST)["Role"]
        self.iam.attach_role_policy(RoleName=name, PolicyArn=self.policy)
        sts = self.client(self.boto3, "sts", *self.admin)
        c = sts.assume_role(RoleArn=role["Arn"], RoleSessionName=session)["Credentials"]
        return role["Arn"], role["RoleId"], c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def signed_login(key, secret, token=None, server_id=SERVER_ID, body=BODY, sign_server_id=True, region="us-east-1"):
    """The login fields for a GetCallerIdentity signed by botocore, as Vault's own CLI helper makes them."""
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    if server_id and sign_server_id:
        headers["X-Vault-AWS-IAM-Server-ID"] = server_id
    request = AWSRequest(method="POST", url="https://sts.amazonaws.com/", data=body, headers=headers)
    SigV4Auth(Credentials(key, secret, token), "sts", region).add_auth(request)
    signed = dict(request.headers)
    if server_id and not sign_server_id:
        signed["X-Vault-AWS-IAM-Server-ID"] = server_id
    return {
        "iam_http_request_method": "POST",
        "iam_request_url": base64.b64encode(b"https://sts.amazonaws.com/").decode(),
        "iam_request_body": base64.b64encode(body.encode()).decode(),
        "iam_request_headers": base64.b64encode(json.dumps({k: [v] for k, v in signed.items()}).encode()).decode(),
    }


class Coffer:
    def __init__(self, server):
        self.server = server
        self.a = server.addr + "/v1/"
        self.root = {"X-Vault-Token": "root"}

    def call(self, method, path, body=None, token="root"):
        r = requests.request(method, self.a + path, json=body, headers={"X-Vault-Token": token} if token else {},
                             timeout=60)
        return r.status_code, (r.json() if r.content else None)

    def ok(self, method, path, body=None):
        code, parsed = self.call(method, path, body)
        assert code in (200, 204), (method, path, code, parsed)
        return parsed

    def login(self, fields, mount="aws"):
        return self.call("POST", f"auth/{mount}/login", fields, token=None)

    def refused(self, fields, mount="aws"):
        code, parsed = self.login(fields, mount)
        assert code >= 400 and "errors" in parsed, (code, parsed)
        assert len(parsed["errors"]) == 1, parsed
        return code, parsed["errors"][0]


@pytest.fixture(scope="module")
def moto():
    m = Moto()
    try:
        m.alice = m.user("alice", "/team/")
        m.bob = m.user("bob")
        m.deployer = m.assumed_role("deployer", "ci-run-7", "/apps/")
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def coffer(cofferd_bin, moto):
    server = start_cofferd_dev(cofferd_bin)
    c = Coffer(server)
    c.ok("PUT", "sys/policies/acl/app", {"policy": APP_POLICY})
    c.ok("POST", "sys/auth/aws", {"type": "aws"})
    c.ok("POST", "auth/aws/config/client", {
        "access_key": moto.admin[0], "secret_key": moto.admin[1], "sts_endpoint": moto.url,
        "iam_endpoint": moto.url, "iam_server_id_header_value": SERVER_ID, "max_retries": 0})
    c.ok("POST", "auth/aws/config/identity", {"iam_metadata": ["default", "client_arn", "canonical_arn"]})
    # resolve_aws_unique_ids left at its default (true): alice's unique ID is looked up in IAM now.
    c.ok("POST", "auth/aws/role/alice", {
        "auth_type": "iam", "bound_iam_principal_arn": [f"arn:aws:iam::{ACCOUNT}:user/alice"],
        "token_policies": ["app"], "token_ttl": "10m"})
    yield c
    server.stop()


# ---- logins that work ----

def test_hvac_iam_login_gives_the_roles_policies_and_the_arn_in_metadata(coffer, moto):
    arn, _, key, secret = moto.alice
    client = hvac.Client(url=coffer.server.addr)
    answer = client.auth.aws.iam_login(key, secret, header_value=SERVER_ID, role="alice", mount_point="aws")
    auth = answer["auth"]
    assert auth["policies"] == ["app", "default"], auth
    assert auth["token_policies"] == ["app", "default"], auth
    assert auth["renewable"] is True and auth["lease_duration"] == 600, auth
    role = coffer.ok("GET", "auth/aws/role/alice")["data"]
    role_id = role["role_id"]
    assert role["resolve_aws_unique_ids"] is True and role["bound_iam_principal_id"] == [moto.alice[1]], role
    assert auth["metadata"] == {
        "account_id": ACCOUNT, "auth_type": "iam", "client_arn": arn,
        "canonical_arn": f"arn:aws:iam::{ACCOUNT}:user/alice", "role_id": role_id}, auth
    assert arn == f"arn:aws:iam::{ACCOUNT}:user/team/alice"
    # The token works: it reads its own policies.
    assert client.is_authenticated()
    assert client.auth.token.lookup_self()["data"]["policies"] == ["app", "default"]


def test_renewal_follows_the_role_and_stops_when_it_is_deleted(coffer, moto):
    arn, unique_id, key, secret = moto.alice
    coffer.ok("POST", "auth/aws/role/renewer", {
        "auth_type": "iam", "bound_iam_principal_arn": [f"arn:aws:iam::{ACCOUNT}:user/alice"],
        "token_policies": ["app"], "token_ttl": "10m"})
    client = hvac.Client(url=coffer.server.addr)
    client.auth.aws.iam_login(key, secret, header_value=SERVER_ID, role="renewer", mount_point="aws")
    coffer.ok("POST", "auth/aws/role/renewer", {"token_ttl": "5m"})
    assert client.auth.token.renew_self()["auth"]["lease_duration"] == 300
    coffer.ok("DELETE", "auth/aws/role/renewer")
    r = requests.post(f"{coffer.server.addr}/v1/auth/token/renew-self", headers={"X-Vault-Token": client.token})
    assert (r.status_code, r.json()["errors"]) == (400, ["failed to renew entry: role entry not found"])


def test_role_defaults_to_the_principals_friendly_name(coffer, moto):
    _, _, key, secret = moto.alice
    code, parsed = coffer.login(signed_login(key, secret))
    assert code == 200, parsed
    assert parsed["auth"]["policies"] == ["app", "default"], parsed


def test_generic_bao_write_login_with_a_botocore_signed_request(coffer, moto, bao_bin):
    _, _, key, secret = moto.alice
    fields = signed_login(key, secret)
    cli = Cli(bao_bin, coffer.server.addr)
    try:
        answer = cli.json("write", "auth/aws/login", "role=alice", *[f"{k}={v}" for k, v in fields.items()])
    finally:
        cli.close()
    assert answer["auth"]["policies"] == ["app", "default"], answer
    assert answer["auth"]["metadata"]["client_arn"] == moto.alice[0], answer


def test_an_assumed_role_binds_through_its_role_arn(coffer, moto):
    role_arn, _, key, secret, token = moto.deployer
    assert role_arn == f"arn:aws:iam::{ACCOUNT}:role/apps/deployer"
    coffer.ok("POST", "auth/aws/role/deployer", {
        "bound_iam_principal_arn": [f"arn:aws:iam::{ACCOUNT}:role/deployer"], "token_policies": ["app"]})
    assert coffer.ok("GET", "auth/aws/role/deployer")["data"]["bound_iam_principal_id"] == [moto.deployer[1]]
    client = hvac.Client(url=coffer.server.addr)
    auth = client.auth.aws.iam_login(key, secret, session_token=token, header_value=SERVER_ID,
                                     mount_point="aws")["auth"]
    assert auth["policies"] == ["app", "default"], auth
    assert auth["metadata"]["client_arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci-run-7", auth
    assert auth["metadata"]["canonical_arn"] == f"arn:aws:iam::{ACCOUNT}:role/deployer", auth


def test_a_wildcard_binds_the_full_arn_with_its_path_from_iam(coffer, moto):
    coffer.ok("POST", "auth/aws/role/team", {"bound_iam_principal_arn": [f"arn:aws:iam::{ACCOUNT}:user/team/*"],
                                             "token_policies": ["app"]})
    code, parsed = coffer.login(dict(signed_login(*moto.alice[2:]), role="team"))
    assert code == 200 and parsed["auth"]["policies"] == ["app", "default"], parsed
    assert coffer.refused(dict(signed_login(*moto.bob[2:]), role="team")) == (
        400, f'IAM Principal "{moto.bob[0]}" does not belong to the role "team"')


def test_a_user_recreated_under_the_same_name_is_not_the_same_principal(coffer, moto):
    arn, _, key, secret = moto.user("carol")
    coffer.ok("POST", "auth/aws/role/carol", {"bound_iam_principal_arn": [arn]})
    assert coffer.login(signed_login(key, secret))[0] == 200
    moto.iam.delete_access_key(UserName="carol", AccessKeyId=key)
    moto.iam.detach_user_policy(UserName="carol", PolicyArn=moto.policy)
    moto.iam.delete_user(UserName="carol")
    again, _, key2, secret2 = moto.user("carol")
    assert again == arn
    assert coffer.refused(signed_login(key2, secret2)) == (
        400, f'IAM Principal "{arn}" does not belong to the role "carol"')
    # Without unique-ID resolution the ARN alone binds, so the new carol gets in.
    coffer.ok("POST", "auth/aws/role/carol-by-name", {"bound_iam_principal_arn": [arn], "resolve_aws_unique_ids": False})
    assert coffer.login(dict(signed_login(key2, secret2), role="carol-by-name"))[0] == 200
    # A principal IAM does not know cannot be bound with resolution on.
    code, parsed = coffer.call("POST", "auth/aws/role/ghost", {"bound_iam_principal_arn": [f"arn:aws:iam::{ACCOUNT}:user/ghost"]})
    assert code == 400 and parsed["errors"][0].startswith(
        f'unable to resolve ARN "arn:aws:iam::{ACCOUNT}:user/ghost" to internal ID: error fetching user "ghost": '), parsed


def test_the_entity_alias_follows_iam_alias(coffer, moto):
    arn, unique_id, key, secret = moto.alice
    coffer.ok("POST", "sys/auth/aws-alias", {"type": "aws"})
    coffer.ok("POST", "auth/aws-alias/config/client", {
        "access_key": moto.admin[0], "secret_key": moto.admin[1], "sts_endpoint": moto.url, "iam_endpoint": moto.url})
    coffer.ok("POST", "auth/aws-alias/role/alice", {"bound_iam_principal_arn": [f"arn:aws:iam::{ACCOUNT}:user/alice"]})
    role_id = coffer.ok("GET", "auth/aws-alias/role/alice")["data"]["role_id"]
    assert coffer.ok("GET", "auth/aws-alias/config/identity")["data"]["iam_alias"] == "role_id"

    def alias_after_login():
        code, parsed = coffer.login(signed_login(key, secret, server_id=None), "aws-alias")
        assert code == 200, parsed
        assert parsed["auth"]["metadata"] == {"account_id": ACCOUNT, "auth_type": "iam", "role_id": role_id}, parsed
        entity = coffer.ok("GET", f"identity/entity/id/{parsed['auth']['entity_id']}")["data"]
        return [a["name"] for a in entity["aliases"]]

    assert alias_after_login() == [role_id]  # Vault's default
    for mode, name in (("unique_id", unique_id), ("full_arn", arn)):
        coffer.ok("POST", "auth/aws-alias/config/identity", {"iam_alias": mode})
        assert alias_after_login() == [name], mode
    code, parsed = coffer.call("POST", "auth/aws-alias/config/identity", {"iam_alias": "email"})
    assert code == 400 and parsed["errors"] == [
        'iam_alias of "email" not in set of allowed values: [role_id unique_id full_arn]'], parsed


# ---- refusals, with Vault's texts (all 400s: Vault answers a login's refusals with ErrorResponse) ----

def test_a_tampered_signature_is_refused_by_sts_and_so_by_coffer(coffer, moto):
    _, _, key, secret = moto.alice
    fields = signed_login(key, secret)
    headers = json.loads(base64.b64decode(fields["iam_request_headers"]))
    auth = headers["Authorization"][0]
    headers["Authorization"] = [auth[:-1] + ("0" if auth[-1] != "0" else "1")]
    fields["iam_request_headers"] = base64.b64encode(json.dumps(headers).encode()).decode()
    code, message = coffer.refused(fields, "aws")
    # moto answers SignatureDoesNotMatch as text/html, which Vault's Content-Type check refuses first.
    assert (code, message) == (400, "error making upstream request: body of GetCallerIdentity is invalid")


def test_a_signed_request_for_another_action_is_not_forwarded(coffer, moto):
    _, _, key, secret = moto.alice
    for body in ("Action=ListUsers&Version=2010-05-08", BODY + "&Extra=1", "Action=GetCallerIdentity"):
        assert coffer.refused(signed_login(key, secret, body=body)) == (400, "iam request body is invalid"), body


def test_only_post_is_accepted(coffer, moto):
    fields = dict(signed_login(*moto.alice[2:]), iam_http_request_method="GET")
    assert coffer.refused(fields) == (400, "invalid iam_http_request_method; currently only 'POST' is supported")


def test_the_server_id_header_must_be_there_signed_and_ours(coffer, moto):
    _, _, key, secret = moto.alice
    prefix = "error validating X-Vault-AWS-IAM-Server-ID header: "
    assert coffer.refused(signed_login(key, secret, server_id=None)) == (
        400, prefix + 'missing header "X-Vault-AWS-IAM-Server-ID"')
    # A login made for another vault cannot be replayed here.
    assert coffer.refused(signed_login(key, secret, server_id="other-vault.example")) == (
        400, prefix + f'expected "{SERVER_ID}" but got "other-vault.example"')
    assert coffer.refused(signed_login(key, secret, sign_server_id=False)) == (400, prefix + "vault header wasn't signed")
    # hvac without header_value: the same refusal.
    client = hvac.Client(url=coffer.server.addr)
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        client.auth.aws.iam_login(key, secret, role="alice", mount_point="aws")
    assert 'missing header \\"X-Vault-AWS-IAM-Server-ID\\"' in str(e.value) or "missing header" in str(e.value)


def test_an_arn_outside_the_role_and_an_unknown_role(coffer, moto):
    bob_arn, _, key, secret = moto.bob
    assert coffer.refused(dict(signed_login(key, secret), role="alice")) == (
        400, f'IAM Principal "{bob_arn}" does not belong to the role "alice"')
    assert coffer.refused(dict(signed_login(key, secret), role="nope")) == (400, "entry for role nope not found")
    # No role given: bob's friendly name, which is no role.
    assert coffer.refused(signed_login(key, secret)) == (400, "entry for role bob not found")


def test_an_unreachable_sts_endpoint(coffer, moto):
    port = free_port()
    coffer.ok("POST", "sys/auth/aws-down", {"type": "aws"})
    coffer.ok("POST", "auth/aws-down/config/client", {"sts_endpoint": f"http://127.0.0.1:{port}", "max_retries": 0})
    coffer.ok("POST", "auth/aws-down/role/alice", {
        "bound_iam_principal_arn": [f"arn:aws:iam::{ACCOUNT}:user/alice"], "resolve_aws_unique_ids": False})
    code, message = coffer.refused(signed_login(*moto.alice[2:]), "aws-down")
    url = f"http://127.0.0.1:{port}/"
    assert (code, message) == (400, f'error making upstream request: error making request: POST {url} giving up after '
                                    f'1 attempt(s): Post "{url}": dial tcp 127.0.0.1:{port}: connect: connection refused')


class FakeSTS:
    """A hostile "STS" on loopback: answers what the test sets, and records what it was sent."""

    def __init__(self):
        self.answer = (200, "text/xml", b"")
        self.received = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fake.received.append((self.path, dict(self.headers.items()), body))
                status, kind, content = fake.answer
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


GOOD_ANSWER = (f'<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>'
               f'<Arn>arn:aws:iam::{ACCOUNT}:user/alice</Arn><UserId>AIDAALICE</UserId><Account>{ACCOUNT}</Account>'
               f'</GetCallerIdentityResult></GetCallerIdentityResponse>')


def test_forwarded_as_signed_and_hostile_sts_answers_refused(coffer, moto):
    sts = FakeSTS()
    try:
        coffer.ok("POST", "sys/auth/aws-fake", {"type": "aws"})
        coffer.ok("POST", "auth/aws-fake/config/client", {"sts_endpoint": sts.url + "/", "max_retries": 0})
        coffer.ok("POST", "auth/aws-fake/role/alice", {
            "bound_iam_principal_arn": [f"arn:aws:iam::{ACCOUNT}:user/alice"], "resolve_aws_unique_ids": False})
        fields = signed_login(*moto.alice[2:])
        sts.answer = (200, "text/xml", GOOD_ANSWER.encode())
        code, parsed = coffer.login(fields, "aws-fake")
        assert code == 200, parsed
        # What reached "STS": the client's path, body, signed headers and the Host it signed.
        path, headers, body = sts.received[-1]
        signed = {k.lower(): v[0] for k, v in json.loads(base64.b64decode(fields["iam_request_headers"])).items()}
        headers = {k.lower(): v for k, v in headers.items()}
        assert path == "/" and body == BODY.encode(), (path, body)
        assert headers["host"] == "sts.amazonaws.com", headers
        for name in ("authorization", "x-amz-date", "content-type", "x-vault-aws-iam-server-id"):
            assert headers[name] == signed[name], (name, headers)

        truncated = GOOD_ANSWER[: len(GOOD_ANSWER) // 2]
        two_arns = GOOD_ANSWER.replace("<UserId>", f"<Arn>arn:aws:iam::{ACCOUNT}:role/admin</Arn><UserId>")
        for answer, message in [
            ((200, "text/xml", truncated.encode()), "error parsing STS response"),
            ((200, "text/xml", two_arns.encode()), "error parsing STS response"),
            ((200, "text/xml", b"<html>proxy</html>"), "error parsing STS response"),
            ((200, "application/json", b"{}"), "body of GetCallerIdentity is invalid"),
            ((403, "text/xml", b"<ErrorResponse><Error><Code>InvalidClientTokenId</Code></Error></ErrorResponse>"),
             "received error code 403 from STS: <ErrorResponse><Error><Code>InvalidClientTokenId</Code></Error>"
             "</ErrorResponse>"),
        ]:
            sts.answer = answer
            assert coffer.refused(fields, "aws-fake") == (400, "error making upstream request: " + message), answer
        # An error that quotes the request (as AWS's SignatureDoesNotMatch can) does not carry the
        # client's session token or signature back out.
        role_arn, _, rkey, rsecret, rtoken = moto.deployer
        session_fields = signed_login(rkey, rsecret, rtoken)
        sent = json.loads(base64.b64decode(session_fields["iam_request_headers"]))
        signature = sent["Authorization"][0].rsplit("Signature=", 1)[1]
        quoted = f"<ErrorResponse><Message>x-amz-security-token:{rtoken} Signature={signature}</Message></ErrorResponse>"
        sts.answer = (403, "text/xml", quoted.encode())
        code, message = coffer.refused(session_fields, "aws-fake")
        assert code == 400 and message.startswith("error making upstream request: received error code 403"), message
        assert rtoken not in message and signature not in message and "<redacted>" in message, message
        # An answer past 64 KiB is not read.
        sts.answer = (200, "text/xml", b"<GetCallerIdentityResponse>" + b"x" * 100_000)
        code, message = coffer.refused(fields, "aws-fake")
        assert code == 400 and message.startswith("error making upstream request: error making request: POST ") and \
            "the answer is larger than 65536 bytes" in message, message
    finally:
        sts.stop()


def test_ec2_is_refused_clearly(coffer):
    code, parsed = coffer.call("POST", "auth/aws/role/web", {"auth_type": "ec2", "bound_ami_id": ["ami-1"]})
    assert code == 400 and "supports only the iam auth type" in parsed["errors"][0], parsed
    code, parsed = coffer.call("POST", "auth/aws/role/web", {"bound_account_id": [ACCOUNT],
                                                             "bound_iam_principal_arn": ["arn:aws:iam::1:user/x"]})
    assert code == 400 and parsed["errors"] == [
        "specified bound_account_id but not specifying ec2 auth_type or inferring ec2_instance"], parsed


def test_config_client_never_shows_the_secret_key(coffer, moto):
    data = coffer.ok("GET", "auth/aws/config/client")["data"]
    assert "secret_key" not in data and data["access_key"] == moto.admin[0], data
    assert moto.admin[1] not in json.dumps(data)


# ---- nothing that lets someone replay a login reaches a log ----

AUDITED = """
storage "memory" {{}}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
log_level = "debug"
"""


def test_no_signature_in_the_audit_log_or_cofferds_output(cofferd_bin, moto, workdir):
    server = start_cofferd_config(cofferd_bin, AUDITED, workdir)
    a = server.addr + "/v1/"
    try:
        init = requests.put(a + "sys/init", json={"secret_shares": 1, "secret_threshold": 1}).json()
        requests.put(a + "sys/unseal", json={"key": init["keys"][0]}).raise_for_status()
        root = {"X-Vault-Token": init["root_token"]}
        audit_log = os.path.join(workdir, "audit.log")
        for path, body in [("sys/audit/file", {"type": "file", "options": {"file_path": audit_log}}),
                           ("sys/auth/aws", {"type": "aws"}),
                           ("auth/aws/config/client", {"sts_endpoint": moto.url, "secret_key": "sk-LEAK-51c0ffee",
                                                       "access_key": "AKIAEXAMPLE",
                                                       "iam_server_id_header_value": SERVER_ID}),
                           ("auth/aws/role/alice", {"bound_iam_principal_arn": [f"arn:aws:iam::{ACCOUNT}:user/alice"],
                                                    "resolve_aws_unique_ids": False})]:
            r = requests.post(a + path, json=body, headers=root)
            assert r.status_code in (200, 204), (path, r.text)
        _, _, key, secret = moto.alice
        secrets = [secret, "sk-LEAK-51c0ffee"]
        good = signed_login(key, secret)
        bad = signed_login(key, secret, server_id="other-vault.example")
        for fields in (good, bad):
            headers = json.loads(base64.b64decode(fields["iam_request_headers"]))
            secrets.append(headers["Authorization"][0].rsplit("Signature=", 1)[1])
            secrets.append(fields["iam_request_headers"])
        r = requests.post(a + "auth/aws/login", json=good)
        assert r.status_code == 200, r.text
        secrets.append(r.json()["auth"]["client_token"])
        assert requests.post(a + "auth/aws/login", json=bad).status_code == 400
        # The headers as a JSON object, too (the other shape Vault takes).
        obj = dict(good, iam_request_headers=json.loads(base64.b64decode(good["iam_request_headers"])))
        assert requests.post(a + "auth/aws/login", json=obj).status_code == 200
    finally:
        server.stop()
    records = open(audit_log).read()
    assert records.count("auth/aws/login") >= 6, "the logins were not audited"
    output = server.output()
    for value in secrets:
        assert value not in records, f"{value[:12]}… reached the audit log"
        assert value not in output, f"{value[:12]}… reached cofferd's log"
