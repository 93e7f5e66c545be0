"""The PKI secrets engine (`pki` mounts) end to end, against OpenBao 2.7.2's behaviour
(/work/shared/design/LEASES-DATABASE-PKI.md, section 3).

Every certificate, key, CSR and CRL a server hands out is read by the real `openssl` CLI, chains are
checked with `openssl verify`, and issued certificates carry real TLS handshakes (`openssl s_server`
with `curl`, and cofferd's own listener). Most tests run twice, against `bao server -dev` (the
reference: it shows the test asserts what OpenBao really does) and against `cofferd -dev`; the few
places where Coffer differs on purpose say so and assert Coffer's documented answer. The last test
sends one request sequence to both servers and compares them field by field.
"""
import os
import re
import secrets
import socket
import subprocess
import time

import pytest
import requests

from conftest import free_port, start_bao_dev, start_cofferd_dev
from pkitools import (Api, Cert, Crl, corrupt_signature, make_csr, openssl, pem_blocks, pem_to_der,
                      pubkey_of_private, remove_tempdirs, tempdir, unwrap_multierror, write)
from test_differential import shape
from test_tls import RawServer

AIA_WARNING = ("This mount hasn't configured any authority information access (AIA) fields; this may make it harder "
               "for systems to find missing certificates in the chain or to validate revocation status of "
               "certificates. Consider updating /config/urls or the newly generated issuer with this information.")
TIDY_STARTED = ("Tidy operation successfully started. Any information from the operation will be printed to "
                "OpenBao's server logs.")
TIDY_NOTHING = ("Manual tidy requested but no tidy operations were set. Enable at least one tidy operation to be run "
                "(tidy_cert_store / tidy_revoked_certs / tidy_invalid_certs / tidy_revoked_cert_issuer_associations / "
                "tidy_expired_issuers / tidy_move_legacy_ca_bundle / tidy_acme).")
LEAF_KU = "Digital Signature, Key Encipherment, Key Agreement"
LEAF_EKU = "TLS Web Server Authentication, TLS Web Client Authentication"
CA_KU = "Certificate Sign, CRL Sign"
GO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"


@pytest.fixture(scope="module", autouse=True)
def _tempdirs():
    yield
    remove_tempdirs()


@pytest.fixture(scope="module", params=["openbao", "cofferd"])
def pki(request, bao_bin):
    """One server of each kind for the module; every test mounts its own paths."""
    if request.param == "openbao":
        server = start_bao_dev(bao_bin)
    else:
        server = start_cofferd_dev(request.getfixturevalue("cofferd_bin"))
    api = Api(server, request.param, bao_bin)
    yield api
    api.close()


class Chain:
    """An EC P-256 root on `<prefix>root`, a P-256 intermediate on `<prefix>int` signed by it and
    installed, a role `web` (example.internal and subdomains, EC keys, max_ttl 72h) on the intermediate."""

    def __init__(self, api, prefix):
        self.dir = tempdir()
        self.root_mount, self.int_mount = f"{prefix}root", f"{prefix}int"
        self.root = api.root(self.root_mount, f"{prefix} Root CA")["certificate"]
        api.mount(self.int_mount)
        csr = api.data("POST", f"{self.int_mount}/intermediate/generate/internal",
                       {"common_name": f"{prefix} Intermediate CA", "key_type": "ec"})["csr"]
        self.int = api.data("POST", f"{self.root_mount}/root/sign-intermediate",
                            {"csr": csr, "ttl": "43800h"})["certificate"]
        api.data("POST", f"{self.int_mount}/intermediate/set-signed", {"certificate": self.int})
        api.data("POST", f"{self.int_mount}/roles/web", {"allowed_domains": "example.internal", "allow_subdomains": True,
                                                         "key_type": "ec", "max_ttl": "72h"})
        self.root_file = write(self.dir, "root.pem", self.root)
        self.int_file = write(self.dir, "int.pem", self.int)


@pytest.fixture(scope="module")
def chain(pki):
    return Chain(pki, "chain")


def now():
    return int(time.time())


def verify(ca_file, cert_pem, untrusted=None, *extra):
    """`openssl verify`: (exit code, output)."""
    d = tempdir()
    path = write(d, "cert.pem", cert_pem)
    args = ["verify", *extra, "-CAfile", ca_file] + (["-untrusted", untrusted] if untrusted else []) + [path]
    code, out = openssl(*args, check=False)
    return code, out.replace(path, "cert.pem")


# ---- 1. The "done when" flow, with the unmodified bao CLI ----

def test_done_when_flow_with_the_bao_cli(pki):
    d = tempdir()
    pki.cli("secrets", "enable", "pki")
    pki.cli("secrets", "tune", "-max-lease-ttl=87600h", "pki")
    _, out, err = pki.cli("write", "pki/root/generate/internal", "common_name=Coffer Done-When Root", "ttl=87600h")
    assert re.search(r"^serial_number\s+([0-9a-f]{2}:){15,19}[0-9a-f]{2}$", out, re.M), out
    assert re.search(r"^issuer_id\s+[0-9a-f-]{36}$", out, re.M) and "private_key" not in out, out
    assert "authority information access (AIA)" in " ".join(err.split()), err  # the CLI prints warnings on stderr
    _, root_out, _ = pki.cli("read", "-field=certificate", "pki/cert/ca")
    root_file = write(d, "root.pem", root_out.strip())
    root = Cert(root_out)
    assert root.subject == root.issuer == "CN=Coffer Done-When Root"

    pki.cli("secrets", "enable", "-path=pki_int", "pki")
    pki.cli("secrets", "tune", "-max-lease-ttl=43800h", "pki_int")
    generated, err = pki.cli_json("write", "pki_int/intermediate/generate/internal",
                                  "common_name=Coffer Done-When Intermediate")
    assert sorted(generated["data"]) == ["csr", "key_id"], generated
    assert generated["data"]["csr"].startswith("-----BEGIN CERTIFICATE REQUEST-----")
    csr_file = write(d, "int.csr", generated["data"]["csr"])
    openssl("req", "-in", csr_file, "-noout", "-verify")

    signed, _ = pki.cli_json("write", "pki/root/sign-intermediate", f"csr=@{csr_file}", "ttl=43800h")
    intermediate = Cert(signed["data"]["certificate"])
    int_file = write(d, "int.pem", signed["data"]["certificate"])
    assert intermediate.subject == "CN=Coffer Done-When Intermediate" and intermediate.issuer == root.subject
    assert [name for name, _, _ in intermediate.extensions[:4]] == [
        "X509v3 Key Usage", "X509v3 Basic Constraints", "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier"], intermediate.extensions
    assert intermediate.ext["X509v3 Key Usage"] == (True, CA_KU)
    assert intermediate.ext["X509v3 Basic Constraints"] == (True, "CA:TRUE")
    assert verify(root_file, intermediate.pem)[0] == 0

    set_signed, _ = pki.cli_json("write", "pki_int/intermediate/set-signed", f"certificate=@{int_file}")
    imported = set_signed["data"]["imported_issuers"]
    assert len(imported) == 1 and set_signed["data"]["mapping"] == {imported[0]: generated["data"]["key_id"]}, set_signed

    _, out, _ = pki.cli("write", "pki_int/roles/example-dot-internal", "allowed_domains=example.internal",
                        "allow_subdomains=true", "max_ttl=72h")
    assert re.search(r"^allowed_domains\s+\[example.internal\]$", out, re.M), out
    before = now()
    issued, err = pki.cli_json("write", "pki_int/issue/example-dot-internal", "common_name=api.example.internal")
    after = now()
    data = issued["data"]
    assert sorted(data) == ["ca_chain", "certificate", "expiration", "issuing_ca", "not_before", "private_key",
                            "private_key_type", "serial_number"], data
    leaf_file = write(d, "leaf.pem", data["certificate"])
    leaf = Cert(data["certificate"])
    # The intermediate alone: the root was never imported into pki_int.
    assert [Cert(c).subject for c in data["ca_chain"]] == [intermediate.subject], data["ca_chain"]
    assert data["private_key_type"] == "rsa" and data["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert pubkey_of_private(data["private_key"]) == leaf.public_key

    code, out = verify(root_file, data["certificate"], int_file)
    assert code == 0 and out.strip() == "cert.pem: OK", out

    # The extension set and order OpenBao gives a leaf; no BasicConstraints.
    assert leaf.version == "3" and leaf.subject == "CN=api.example.internal" and leaf.issuer == intermediate.subject
    assert leaf.extensions == [
        ("X509v3 Key Usage", True, LEAF_KU),
        ("X509v3 Extended Key Usage", False, LEAF_EKU),
        ("X509v3 Subject Key Identifier", False, leaf.ext["X509v3 Subject Key Identifier"][1]),
        ("X509v3 Authority Key Identifier", False, intermediate.ext["X509v3 Subject Key Identifier"][1]),
        ("X509v3 Subject Alternative Name", False, "DNS:api.example.internal"),
    ], leaf.text
    assert re.fullmatch(r"([0-9A-F]{2}:){19}[0-9A-F]{2}", leaf.ext["X509v3 Subject Key Identifier"][1])
    assert before - 32 <= leaf.not_before <= after - 28, (before, leaf.not_before)
    assert before + 72 * 3600 - 2 <= leaf.not_after <= after + 72 * 3600 + 2, (before, leaf.not_after)
    assert data["expiration"] == leaf.not_after and data["not_before"] == leaf.not_before
    assert data["serial_number"] == leaf.serial_colon
    # 20 random bytes with the sign bit clear: a cert may come out a byte shorter (1 in 128), not all three.
    serials = [c.serial_bytes for c in (root, intermediate, leaf)]
    assert all(16 <= n <= 20 for n in serials) and 20 in serials, serials

    # A CRL before the revocation: the leaf passes a CRL check.
    crl_before = requests.get(f"{pki.addr}/v1/pki_int/crl/pem", timeout=10)
    assert crl_before.status_code == 200, crl_before.text
    crl_file = write(d, "crl-before.pem", crl_before.text)
    code, out = verify(root_file, data["certificate"], int_file, "-crl_check", "-CRLfile", crl_file)
    assert code == 0, out

    revoked, _ = pki.cli_json("write", "pki_int/revoke", f"serial_number={data['serial_number']}")
    assert revoked["data"]["state"] == "revoked" and abs(revoked["data"]["revocation_time"] - now()) <= 5, revoked
    assert re.fullmatch(GO_TIME, revoked["data"]["revocation_time_rfc3339"]), revoked

    # Both CRL forms, without a token.
    der = requests.get(f"{pki.addr}/v1/pki_int/crl", timeout=10)
    assert der.status_code == 200 and der.headers["Content-Type"] == "application/pkix-crl", (der.status_code, der.headers)
    assert der.content[:1] == b"\x30"
    pem = requests.get(f"{pki.addr}/v1/pki_int/crl/pem", timeout=10)
    assert pem.status_code == 200 and pem.headers["Content-Type"] == "application/x-pem-file", pem.headers
    assert pem.text.startswith("-----BEGIN X509 CRL-----") and pem_to_der(pem.text) == der.content
    crl_file = write(d, "crl.pem", pem.text)
    code, out = openssl("crl", "-in", crl_file, "-noout", "-verify", "-CAfile", int_file, check=False)
    assert code == 0 and "verify OK" in out, out
    crl = Crl(der.content)
    assert crl.lists(data["serial_number"]) and crl.revoked == [leaf.serial_hex], crl.text
    assert crl.version == "2" and crl.issuer == intermediate.subject
    assert [n for n, _, _ in crl.extensions] == ["X509v3 Authority Key Identifier", "X509v3 CRL Number"], crl.text
    assert crl.next_update - crl.last_update == 72 * 3600 and "CRL entry extensions" not in crl.text
    assert crl.number > Crl(crl_before.text).number

    code, out = verify(root_file, data["certificate"], int_file, "-crl_check", "-CRLfile", crl_file)
    assert code != 0 and "error 23 at 0 depth lookup: certificate revoked" in out, out


# ---- 2. Real TLS handshakes with issued certificates ----

def wait_for_port(port, proc, what):
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, f"{what} exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{what} did not listen on {port}"
            time.sleep(0.05)


def curl(*args):
    p = subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def other_root(directory):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            "other.key", "-out", "other.pem", "-days", "1", "-subj", "/CN=unrelated root", cwd=directory)
    return os.path.join(directory, "other.pem")


def test_openssl_s_server_with_an_issued_certificate(pki, chain):
    d = tempdir()
    data = pki.data("POST", f"{chain.int_mount}/issue/web", {"common_name": "api.example.internal", "ttl": "1h"})
    assert data["private_key"].startswith("-----BEGIN EC PRIVATE KEY-----")
    cert = write(d, "leaf.pem", data["certificate"])
    key = write(d, "key.pem", data["private_key"])
    port = free_port()
    server = subprocess.Popen(["openssl", "s_server", "-cert", cert, "-key", key, "-cert_chain", chain.int_file,
                               "-accept", str(port), "-www"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, server, "openssl s_server")
        url = f"https://api.example.internal:{port}/"
        resolve = f"api.example.internal:{port}:127.0.0.1"
        code, out = curl("--cacert", chain.root_file, "--resolve", resolve, url)
        assert code == 0 and "Ciphers supported in s_server binary" in out, out
        # The same root with the intermediate in the bundle also works; an unrelated root does not.
        bundle = write(d, "bundle.pem", chain.root + "\n" + chain.int)
        assert curl("--cacert", bundle, "--resolve", resolve, url)[0] == 0
        code, out = curl("--cacert", other_root(d), "--resolve", resolve, url)
        assert code == 60, out
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_cofferd_listener_with_an_issued_certificate(pki, chain, cofferd_bin):
    """cofferd's TLS listener serving a certificate (and its key, SEC1 `EC PRIVATE KEY` as issued) from
    this PKI; tls_cert_file holds the leaf then the intermediate, clients trust only the root."""
    d = tempdir()
    data = pki.data("POST", f"{chain.int_mount}/issue/web",
                    {"common_name": "coffer.example.internal", "ip_sans": "127.0.0.1", "ttl": "1h"})
    write(d, "server.crt", data["certificate"] + "\n" + chain.int)
    write(d, "server.key", data["private_key"])
    server = RawServer(cofferd_bin, """
storage "memory" {{}}
listener "tcp" {{
  address       = "{addr}"
  tls_cert_file = "%s/server.crt"
  tls_key_file  = "%s/server.key"
}}
""" % (d, d), d)
    try:
        r = requests.get(f"https://{server.hostport}/v1/sys/seal-status", verify=chain.root_file, timeout=10,
                         headers={"Connection": "close"})
        assert r.status_code == 200 and r.json()["initialized"] is False, r.text
        code, out = curl("--cacert", chain.root_file, f"https://{server.hostport}/v1/sys/seal-status")
        assert code == 0 and '"initialized":false' in out, out
        p = subprocess.run(["openssl", "s_client", "-connect", server.hostport, "-CAfile", chain.root_file,
                            "-verify_return_error", "-showcerts"], input=b"", capture_output=True, timeout=30)
        out = p.stdout.decode(errors="replace")
        assert "Verify return code: 0 (ok)" in out, out
        served = pem_blocks(out)
        assert Cert(served[0]).serial_colon == data["serial_number"] and len(served) == 2, out
    finally:
        server.stop()


# ---- 3. The other endpoints ----

@pytest.mark.parametrize("key_type,bits,label,algorithm", [
    ("ec", 256, "EC PRIVATE KEY", "ecdsa-with-SHA256"),
    ("rsa", 2048, "RSA PRIVATE KEY", "sha256WithRSAEncryption"),
    ("ed25519", 0, "PRIVATE KEY", "ED25519"),
])
def test_root_generate_exported_and_leaves_of_each_key_type(pki, key_type, bits, label, algorithm):
    mount = f"exported-{key_type}"
    pki.mount(mount)
    body = {"common_name": f"Exported {key_type} Root", "ttl": "8760h", "key_type": key_type}
    if bits:
        body["key_bits"] = bits
    r = pki.ok("POST", f"{mount}/root/generate/exported", body)
    data = r["data"]
    assert r["warnings"] == [AIA_WARNING], r["warnings"]
    assert sorted(data) == ["certificate", "expiration", "issuer_id", "issuer_name", "issuing_ca", "key_id",
                            "key_name", "private_key", "private_key_type", "serial_number"], sorted(data)
    assert data["private_key_type"] == key_type
    assert data["private_key"].startswith(f"-----BEGIN {label}-----\n"), data["private_key"][:40]
    code, out = openssl("pkey", "-noout", "-text", input=data["private_key"], check=False)
    assert code == 0, out
    root = Cert(data["certificate"])
    assert pubkey_of_private(data["private_key"]) == root.public_key
    assert data["issuing_ca"].strip() == data["certificate"].strip() and data["serial_number"] == root.serial_colon
    assert root.subject == root.issuer == f"CN=Exported {key_type} Root" and root.signature_algorithm == algorithm
    assert root.extensions == [
        ("X509v3 Key Usage", True, CA_KU),
        ("X509v3 Basic Constraints", True, "CA:TRUE"),
        ("X509v3 Subject Key Identifier", False, root.ext["X509v3 Subject Key Identifier"][1]),
        ("X509v3 Authority Key Identifier", False, root.ext["X509v3 Subject Key Identifier"][1]),
    ], root.text
    root_file = write(tempdir(), "root.pem", data["certificate"])

    # A leaf of every key type under this root; KeyUsage is the role's list whatever the key.
    for leaf_type, leaf_label in (("ec", "EC PRIVATE KEY"), ("rsa", "RSA PRIVATE KEY"), ("ed25519", "PRIVATE KEY")):
        pki.ok("POST", f"{mount}/roles/{leaf_type}", {"allow_any_name": True, "key_type": leaf_type})
        leaf_data = pki.data("POST", f"{mount}/issue/{leaf_type}", {"common_name": f"{leaf_type}.example.com",
                                                                     "ttl": "1h"})
        assert leaf_data["private_key_type"] == leaf_type
        assert leaf_data["private_key"].startswith(f"-----BEGIN {leaf_label}-----\n")
        leaf = Cert(leaf_data["certificate"])
        assert pubkey_of_private(leaf_data["private_key"]) == leaf.public_key
        code, out = verify(root_file, leaf_data["certificate"])
        assert code == 0, f"{leaf_type} leaf under a {key_type} root: {out}"
        assert leaf.signature_algorithm == algorithm
        assert leaf.ext["X509v3 Key Usage"] == (True, LEAF_KU) and "X509v3 Basic Constraints" not in leaf.ext

    # generate/internal never returns the key.
    pki.mount(f"{mount}-internal")
    internal = pki.data("POST", f"{mount}-internal/root/generate/internal", body)
    assert "private_key" not in internal and "private_key_type" not in internal


def test_sign_with_a_csr_and_sign_verbatim(pki, chain):
    d = tempdir()
    csr, key = make_csr(d, "svc", "/CN=svc.example.internal/O=Acme",
                        ["DNS:alt.example.internal", "DNS:zzz.example.internal"])
    r = pki.ok("POST", f"{chain.int_mount}/sign/web", {"csr": csr, "ttl": "1h"})
    data = r["data"]
    assert r["warnings"] is None and sorted(data) == ["ca_chain", "certificate", "expiration", "issuing_ca",
                                                      "not_before", "serial_number"], r
    cert = Cert(data["certificate"])
    assert cert.public_key == pubkey_of_private(key)  # the CSR's key is kept
    assert cert.subject == "CN=svc.example.internal", cert.subject  # O=Acme dropped
    assert cert.san() == ["DNS:alt.example.internal", "DNS:zzz.example.internal", "DNS:svc.example.internal"]
    assert cert.ext["X509v3 Extended Key Usage"] == (False, LEAF_EKU)
    assert verify(chain.root_file, data["certificate"], chain.int_file)[0] == 0

    # common_name next to a CSR only earns a warning.
    r = pki.ok("POST", f"{chain.int_mount}/sign/web", {"csr": csr, "common_name": "other.example.internal",
                                                       "ttl": "1h"})
    assert r["warnings"] == ['the common_name field was provided but the role is set with "use_csr_common_name" '
                             'set to true'], r["warnings"]
    assert Cert(r["data"]["certificate"]).subject == "CN=svc.example.internal"

    # sign-verbatim keeps the whole subject and only the CSR's SANs; no EKU (the CSR asked for none).
    data = pki.data("POST", f"{chain.int_mount}/sign-verbatim", {"csr": csr, "ttl": "1h"})
    cert = Cert(data["certificate"])
    assert sorted(cert.subject.split(",")) == ["CN=svc.example.internal", "O=Acme"], cert.subject
    assert cert.san() == ["DNS:alt.example.internal", "DNS:zzz.example.internal"]
    assert [(n, c) for n, c, _ in cert.extensions] == [
        ("X509v3 Key Usage", True), ("X509v3 Subject Key Identifier", False),
        ("X509v3 Authority Key Identifier", False), ("X509v3 Subject Alternative Name", False)], cert.text
    assert cert.public_key == pubkey_of_private(key)
    assert verify(chain.root_file, data["certificate"], chain.int_file)[0] == 0


def test_issuers_list_read_rename_and_default(pki):
    mount = "issuers"
    first = pki.root(mount, "First Root", issuer_name="first")
    second = pki.data("POST", f"{mount}/root/generate/internal", {"common_name": "Second Root", "ttl": "8760h",
                                                                  "key_type": "ec", "issuer_name": "second"})
    assert (first["issuer_name"], second["issuer_name"]) == ("first", "second")
    # A second root does not move the default.
    config = pki.data("GET", f"{mount}/config/issuers")
    assert config == {"default": first["issuer_id"], "default_follows_latest_issuer": False}, config

    listed = pki.data("LIST", f"{mount}/issuers")
    assert sorted(listed["keys"]) == sorted([first["issuer_id"], second["issuer_id"]]), listed
    assert listed["key_info"] == {
        first["issuer_id"]: {"is_default": True, "issuer_name": "first", "key_id": first["key_id"],
                             "serial_number": first["serial_number"]},
        second["issuer_id"]: {"is_default": False, "issuer_name": "second", "key_id": second["key_id"],
                              "serial_number": second["serial_number"]},
    }, listed
    for ref in (first["issuer_id"], "first", "default"):
        issuer = pki.data("GET", f"{mount}/issuer/{ref}")
        assert issuer["issuer_id"] == first["issuer_id"] and issuer["issuer_name"] == "first", (ref, issuer)
        assert issuer["certificate"].strip() == first["certificate"].strip()
        assert issuer["leaf_not_after_behavior"] == "err" and issuer["revoked"] is False
        assert issuer["usage"] == "crl-signing,issuing-certificates,ocsp-signing,read-only"
        assert issuer["revocation_signature_algorithm"] == "ECDSAWithSHA256"
    assert pki.error("GET", f"{mount}/issuer/first", token=None)[0] == 403

    renamed = pki.data("POST", f"{mount}/issuer/{second['issuer_id']}", {"issuer_name": "renamed"})
    assert renamed["issuer_name"] == "renamed" and renamed["issuer_id"] == second["issuer_id"]
    assert pki.data("GET", f"{mount}/issuer/renamed")["issuer_id"] == second["issuer_id"]
    assert pki.error_500("GET", f"{mount}/issuer/second") == "unable to find PKI issuer for reference: second"
    assert pki.error("POST", f"{mount}/issuer/renamed", {"issuer_name": "first"}) == (400, "issuer name already in use")

    assert pki.data("POST", f"{mount}/config/issuers", {"default": "renamed"})["default"] == second["issuer_id"]
    assert pki.data("GET", f"{mount}/config/issuers")["default"] == second["issuer_id"]
    pki.ok("POST", f"{mount}/roles/r", {"allow_any_name": True, "key_type": "ec"})
    ski = {i["issuer_id"]: Cert(i["certificate"]).ext["X509v3 Subject Key Identifier"][1] for i in (first, second)}
    leaf = Cert(pki.data("POST", f"{mount}/issue/r", {"common_name": "a.example.com", "ttl": "1h"})["certificate"])
    assert leaf.ext["X509v3 Authority Key Identifier"][1] == ski[second["issuer_id"]]
    # The path form overrides the default.
    leaf = Cert(pki.data("POST", f"{mount}/issuer/first/issue/r", {"common_name": "b.example.com", "ttl": "1h"})
                ["certificate"])
    assert leaf.ext["X509v3 Authority Key Identifier"][1] == ski[first["issuer_id"]]


def test_config_urls_puts_aia_and_cdp_into_later_certificates(pki):
    mount = "urls"
    pki.root(mount, "URLs Root")
    pki.ok("POST", f"{mount}/roles/r", {"allow_any_name": True, "key_type": "ec"})
    before = Cert(pki.data("POST", f"{mount}/issue/r", {"common_name": "a.example.com", "ttl": "1h"})["certificate"])
    assert "Authority Information Access" not in before.ext and "X509v3 CRL Distribution Points" not in before.ext
    urls = {"issuing_certificates": ["http://pki.example.internal/v1/urls/ca"],
            "crl_distribution_points": ["http://pki.example.internal/v1/urls/crl"]}
    echo = {**urls, "delta_crl_distribution_points": [], "enable_templating": False, "ocsp_servers": []}
    assert pki.data("POST", f"{mount}/config/urls", urls) == echo
    assert pki.data("GET", f"{mount}/config/urls") == echo

    after = Cert(pki.data("POST", f"{mount}/issue/r", {"common_name": "b.example.com", "alt_names": "c.example.com",
                                                       "ip_sans": "127.0.0.1", "ttl": "1h"})["certificate"])
    assert [n for n, _, _ in after.extensions] == [
        "X509v3 Key Usage", "X509v3 Extended Key Usage", "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier", "Authority Information Access", "X509v3 Subject Alternative Name",
        "X509v3 CRL Distribution Points"], after.text
    assert after.ext["Authority Information Access"] == (False, "CA Issuers - URI:http://pki.example.internal/v1/urls/ca")
    assert after.ext["X509v3 CRL Distribution Points"] == (False, "Full Name:\nURI:http://pki.example.internal/v1/urls/crl")
    assert after.san() == ["DNS:b.example.com", "DNS:c.example.com", "IP Address:127.0.0.1"]
    # With the URLs set, generating a CA no longer warns.
    assert pki.ok("POST", f"{mount}/root/generate/internal", {"common_name": "URLs Root 2", "ttl": "8760h",
                                                               "key_type": "ec"})["warnings"] is None


def test_cert_lookup_lists_and_ca_downloads(pki):
    mount = "lookup"
    root = pki.root(mount, "Lookup Root")
    pki.ok("POST", f"{mount}/roles/r", {"allow_any_name": True, "key_type": "ec"})
    data = pki.data("POST", f"{mount}/issue/r", {"common_name": "a.example.com", "ttl": "1h"})
    serial = data["serial_number"]

    forms = (serial, serial.replace(":", "-"), serial.upper(), serial.replace(":", "-").upper())
    for form in forms:
        r = requests.get(f"{pki.addr}/v1/{mount}/cert/{form}", timeout=10)  # no token
        assert r.status_code == 200, (form, r.status_code, r.text)
        got = r.json()["data"]
        assert got == {"certificate": got["certificate"], "revocation_time": 0, "revocation_time_rfc3339": ""}, got
        assert got["certificate"].strip() == data["certificate"].strip()
    r = requests.get(f"{pki.addr}/v1/{mount}/cert/11:22:33", timeout=10)
    assert r.status_code == 404, r.text

    raw = requests.get(f"{pki.addr}/v1/{mount}/cert/{serial}/raw", timeout=10)
    assert raw.status_code == 200 and raw.headers["Content-Type"] == "application/pkix-cert", raw.headers
    assert raw.content == pem_to_der(data["certificate"])
    raw_pem = requests.get(f"{pki.addr}/v1/{mount}/cert/{serial}/raw/pem", timeout=10)
    assert raw_pem.headers["Content-Type"] == "application/pem-certificate-chain", raw_pem.headers
    assert pem_to_der(raw_pem.text) == raw.content

    # LIST certs needs a token; the CA's own serial is listed; sorted.
    assert pki.error("LIST", f"{mount}/certs", token=None)[0] == 403
    keys = pki.keys(f"{mount}/certs")
    assert sorted(keys) == keys and set(keys) == {serial, root["serial_number"]}, keys
    assert pki.data("GET", f"{mount}/certs?list=true")["keys"] == keys

    ca = requests.get(f"{pki.addr}/v1/{mount}/ca", timeout=10)
    assert ca.status_code == 200 and ca.headers["Content-Type"] == "application/pkix-cert", ca.headers
    assert ca.content == pem_to_der(root["certificate"])
    ca_pem = requests.get(f"{pki.addr}/v1/{mount}/ca/pem", timeout=10)
    assert ca_pem.headers["Content-Type"] == "application/pem-certificate-chain", ca_pem.headers
    assert ca_pem.text.strip() == root["certificate"].strip()
    ca_chain = requests.get(f"{pki.addr}/v1/{mount}/ca_chain", timeout=10)
    assert ca_chain.status_code == 200 and ca_chain.headers["Content-Type"] == "application/pkix-cert"  # sic
    assert [pem_to_der(b) for b in pem_blocks(ca_chain.text)] == [ca.content], ca_chain.text

    # A mount with no issuer yet: empty 204s, and issue is a 500.
    pki.mount(f"{mount}-empty")
    for path in ("ca/pem", "crl"):
        r = requests.get(f"{pki.addr}/v1/{mount}-empty/{path}", timeout=10)
        assert (r.status_code, r.content) == (204, b""), (path, r.status_code, r.content)
    pki.ok("POST", f"{mount}-empty/roles/r", {"allow_any_name": True, "key_type": "ec"})
    assert pki.error_500("POST", f"{mount}-empty/issue/r", {"common_name": "a.example.com"}) == (
        "could not fetch the CA certificate (was one set?): no default issuer currently configured")


def test_generate_lease_revoking_the_lease_revokes_the_certificate(pki):
    mount = "leased"
    pki.root(mount, "Leased Root")
    pki.ok("POST", f"{mount}/roles/leased", {"allow_any_name": True, "key_type": "ec", "generate_lease": True,
                                             "ttl": "1h"})
    r = pki.ok("POST", f"{mount}/issue/leased", {"common_name": "l.example.com"})
    serial = r["data"]["serial_number"]
    assert re.fullmatch(rf"{mount}/issue/leased/[A-Za-z0-9]{{24}}", r["lease_id"]), r["lease_id"]
    assert r["renewable"] is False and 3590 <= r["lease_duration"] <= 3600, r
    assert pki.error("PUT", "sys/leases/renew", {"lease_id": r["lease_id"]}) == (400, "lease is not renewable")
    assert pki.data("GET", f"{mount}/cert/{serial}")["revocation_time"] == 0

    assert pki("PUT", "sys/leases/revoke", {"lease_id": r["lease_id"]}) == (204, None)
    cert = pki.data("GET", f"{mount}/cert/{serial}")
    assert abs(cert["revocation_time"] - now()) <= 5, cert
    crl = Crl(requests.get(f"{pki.addr}/v1/{mount}/crl", timeout=10).content)
    assert crl.lists(serial), crl.text
    assert pki.keys(f"{mount}/certs/revoked") == [serial]


def test_no_store_certificates_are_not_stored_and_still_revocable(pki):
    mount = "nostore"
    pki.root(mount, "No-Store Root")
    pki.ok("POST", f"{mount}/roles/ns", {"allow_any_name": True, "key_type": "ec", "no_store": True})
    certs_before = pki.keys(f"{mount}/certs")
    first = pki.data("POST", f"{mount}/issue/ns", {"common_name": "a.example.com", "ttl": "1h"})
    assert requests.get(f"{pki.addr}/v1/{mount}/cert/{first['serial_number']}", timeout=10).status_code == 404
    assert pki.keys(f"{mount}/certs") == certs_before

    revoked = pki.data("POST", f"{mount}/revoke", {"certificate": first["certificate"]})
    assert revoked["state"] == "revoked", revoked
    assert Crl(requests.get(f"{pki.addr}/v1/{mount}/crl", timeout=10).content).lists(first["serial_number"])

    second = pki.data("POST", f"{mount}/issue/ns", {"common_name": "b.example.com", "ttl": "1h"})
    if pki.kind == "openbao":
        # OpenBao cannot revoke an unstored certificate by serial (LEASES-DATABASE-PKI.md 3.5).
        assert pki.error("POST", f"{mount}/revoke", {"serial_number": second["serial_number"]}) == (
            400, f"certificate with serial {second['serial_number']} not found.")
    else:
        # Coffer's improvement (section 6, item 5): revocable by serial all the same.
        revoked = pki.data("POST", f"{mount}/revoke", {"serial_number": second["serial_number"]})
        assert revoked["state"] == "revoked" and abs(revoked["revocation_time"] - now()) <= 5, revoked
        crl = Crl(requests.get(f"{pki.addr}/v1/{mount}/crl", timeout=10).content)
        assert crl.lists(second["serial_number"]) and crl.lists(first["serial_number"]), crl.text
        d = tempdir()
        root_file = write(d, "root.pem", requests.get(f"{pki.addr}/v1/{mount}/ca/pem", timeout=10).text)
        crl_file = write(d, "crl.pem", crl.pem)
        code, out = verify(root_file, second["certificate"], None, "-crl_check", "-CRLfile", crl_file)
        assert code != 0 and "certificate revoked" in out, out

    # Only serials this mount issued: one from another mount's no_store role, and a made-up one, are
    # refused as unknown and change no CRL (Coffer's serials carry a MAC of the mount, docs/pki.md).
    pki.root(f"{mount}-other", "Other No-Store Root")
    pki.ok("POST", f"{mount}-other/roles/ns", {"allow_any_name": True, "key_type": "ec", "no_store": True})
    foreign = pki.data("POST", f"{mount}-other/issue/ns", {"common_name": "c.example.com", "ttl": "1h"})["serial_number"]
    made_up = ":".join(f"{b:02x}" for b in bytes([0x40 | secrets.randbelow(64)]) + secrets.token_bytes(19))
    revoked_before = pki.keys(f"{mount}/certs/revoked")
    for serial in (foreign, made_up):
        assert pki.error("POST", f"{mount}/revoke", {"serial_number": serial}) == (
            400, f"certificate with serial {serial} not found.")
    assert pki.keys(f"{mount}/certs/revoked") == revoked_before
    assert pki.keys(f"{mount}-other/certs/revoked") == []
    crl = Crl(requests.get(f"{pki.addr}/v1/{mount}/crl", timeout=10).content)
    assert not crl.lists(foreign) and not crl.lists(made_up), crl.text


def test_tidy_removes_expired_certificates(pki):
    mount = "tidy"
    pki.root(mount, "Tidy Root")
    pki.ok("POST", f"{mount}/roles/r", {"allow_any_name": True, "key_type": "ec"})
    issued_at = time.time()
    short = pki.data("POST", f"{mount}/issue/r", {"common_name": "short.example.com", "ttl": "2s"})
    assert short["expiration"] == Cert(short["certificate"]).not_after
    assert issued_at + 1 <= short["expiration"] <= time.time() + 2, (issued_at, short["expiration"])
    lasting = pki.data("POST", f"{mount}/issue/r", {"common_name": "lasting.example.com", "ttl": "1h"})
    # Expired 1.5 s ago: longer than the 1 s safety buffer (OpenBao: now > NotAfter + buffer).
    time.sleep(max(0.0, short["expiration"] + 1.5 - time.time()))

    r = pki.raw("POST", f"{mount}/tidy", {})
    assert r.status_code == 202 and r.json()["warnings"] == [TIDY_NOTHING], (r.status_code, r.text)
    r = pki.raw("POST", f"{mount}/tidy", {"tidy_cert_store": True, "tidy_revoked_certs": True, "safety_buffer": "1s"})
    assert r.status_code == 202, (r.status_code, r.text)
    body = r.json()
    assert (body["warnings"], body["data"]) == ([TIDY_STARTED], None), body

    deadline = time.monotonic() + 10
    while (status := pki.data("GET", f"{mount}/tidy-status"))["state"] != "Finished":
        assert time.monotonic() < deadline and status["state"] == "Running", status
        time.sleep(0.1)
    assert status["tidy_cert_store"] is True and status["safety_buffer"] == 1, status
    assert status["error"] is None, status
    assert status["cert_store_deleted_count"] == 1, f"a certificate expired 1.5 s ago outlived safety_buffer=1s: {status}"
    assert requests.get(f"{pki.addr}/v1/{mount}/cert/{short['serial_number']}", timeout=10).status_code == 404
    assert requests.get(f"{pki.addr}/v1/{mount}/cert/{lasting['serial_number']}", timeout=10).status_code == 200
    assert short["serial_number"] not in pki.keys(f"{mount}/certs")
    # The 202 envelope of a tidy has an empty request_id (LEASES-DATABASE-PKI.md section 0).
    assert body["request_id"] == "", body


# ---- 4. Bad input: OpenBao's status and text, and nothing left behind ----

def test_bad_input_is_refused_and_leaves_nothing(pki):
    mount = "bad"
    pki.root(mount, "Bad Input Root", ttl="2h")
    pki.ok("POST", f"{mount}/roles/web", {"allowed_domains": "example.internal", "allow_subdomains": True,
                                          "key_type": "ec", "max_ttl": "1000h"})
    pki.ok("POST", f"{mount}/roles/any", {"allowed_domains": "example.internal", "allow_subdomains": True,
                                          "key_type": "any"})
    d = tempdir()
    csr, _ = make_csr(d, "good", "/CN=svc.example.internal", ["DNS:svc.example.internal"])
    bad_csr = corrupt_signature(csr)
    code, out = openssl("req", "-in", write(d, "bad.csr", bad_csr), "-noout", "-verify", check=False)
    assert "self-signature verify failure" in out, out  # openssl itself refuses it (its exit code stays 0)

    def state():
        return (pki.keys(f"{mount}/certs"), pki.keys(f"{mount}/certs/revoked"), pki.keys(f"{mount}/roles"),
                sorted(pki.keys(f"{mount}/issuers")), sorted(pki.keys(f"{mount}/keys")),
                Crl(requests.get(f"{pki.addr}/v1/{mount}/crl", timeout=10).content).revoked)
    initial = state()
    assert len(initial[0]) == 1 and initial[2] == ["any", "web"], initial

    cases = [
        ("POST", "sign/web", {"csr": bad_csr, "ttl": "1h"}, 400, "request signature invalid"),
        ("POST", "sign/any", {"csr": bad_csr, "ttl": "1h"}, 400, "request signature invalid"),
        ("POST", "sign-verbatim", {"csr": bad_csr, "ttl": "1h"}, 400, "request signature invalid"),
        ("POST", "issue/web", {"common_name": "www.evil.com"}, 400, "common name www.evil.com not allowed by this role"),
        ("POST", "issue/web", {"common_name": "example.internal"}, 400,
         "common name example.internal not allowed by this role"),
        ("POST", "issue/web", {"common_name": "a.example.internal", "alt_names": "x.evil.com"}, 400,
         "subject alternate name x.evil.com not allowed by this role"),
        ("POST", "issue/web", {"common_name": "a.example.internal", "ip_sans": "notanip"}, 400,
         'the value "notanip" is not a valid IP address'),
        ("POST", "issue/web", {}, 400, 'the common_name field is required, or must be provided in a CSR with '
                                       '"use_csr_common_name" set to true, unless "require_cn" is set to false'),
        ("POST", "issue/web", {"common_name": "a.example.internal", "ttl": "100h"}, 400,
         re.compile(rf"cannot satisfy request, as TTL would result in notAfter of {GO_TIME} that is beyond the "
                    rf"expiration of the CA certificate at {GO_TIME}")),
        ("POST", "issue/nope", {"common_name": "a.example.internal"}, 400, "unknown role: nope"),
        ("POST", "sign/nope", {"csr": csr}, 400, "unknown role: nope"),
        ("POST", "sign/web", {"csr": "garbage"}, 400, "csr contains no data"),
        ("POST", "sign/web", {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"},
         400, re.compile(r"certificate request could not be parsed(: .+)?")),  # (OpenBao adds Go's asn1 error)
        ("POST", "intermediate/set-signed", {"certificate": "garbage"}, 400,
         "provided data for import was too short; perhaps a path was passed to the API rather than the contents of "
         "a PEM file"),
        ("POST", "roles/rsa1000", {"key_type": "rsa", "key_bits": 1000}, 400,
         "RSA keys < 2048 bits are unsafe and not supported: got 1000"),
        ("POST", "roles/ec300", {"key_type": "ec", "key_bits": 300}, 400, "unsupported bit length for EC key: 300"),
        ("POST", "root/generate/internal", {"common_name": "x", "key_type": "rsa", "key_bits": 1000}, 400,
         "RSA keys < 2048 bits are unsafe and not supported: got 1000"),
        ("POST", "root/generate/internal", {"common_name": "x", "key_type": "ec", "key_bits": 300}, 400,
         "unsupported bit length for EC key: 300"),
        ("POST", "root/generate/nonsense", {"common_name": "x"}, 400,
         'the "exported" path parameter must be "internal", "existing", exported" or "kms"'),
        ("POST", "revoke", {"serial_number": "11:22:33"}, 400, "certificate with serial 11:22:33 not found."),
        ("POST", "revoke", {}, 400, "The serial number or certificate to revoke must be provided."),
        ("GET", "issuer/nope", None, 500, "unable to find PKI issuer for reference: nope"),
        ("POST", "issuer/nope/issue/web", {"common_name": "a.example.internal"}, 500,
         "could not fetch the CA certificate (was one set?): unable to find PKI issuer for reference: nope"),
    ]
    problems = []
    for method, path, body, status, expected in cases:
        code, parsed = pki(method, f"{mount}/{path}", body)
        if isinstance(parsed, dict) and len(parsed.get("errors") or []) == 1:
            message = parsed["errors"][0]
        else:
            message = f"<not one error: {parsed!r}>"
        if status == 500:
            if message == unwrap_multierror(message):  # docs/compatibility.md: PKI 500s stay multierrors
                problems.append(f"{method} {path}: the 500's message is not a multierror: {message!r}")
            message = unwrap_multierror(message)
        ok = expected.fullmatch(message) if isinstance(expected, re.Pattern) else message == expected
        if code != status or not ok:
            problems.append(f"{method} {path} {_short(body)}: got {code} {message!r}, want {status} {expected!r}")
        if state() != initial:
            problems.append(f"{method} {path}: left something behind: {state()} (was {initial})")
    for role in ("rsa1000", "ec300"):
        if pki("GET", f"{mount}/roles/{role}")[0] != 404:
            problems.append(f"roles/{role} was stored")

    # A bad duration: OpenBao quotes the value; Coffer names the field and its type, never the value
    # (docs/compatibility.md, "Errors for mistyped values").
    code, message = pki.error("POST", f"{mount}/issue/web", {"common_name": "a.example.internal", "ttl": "abc"})
    if pki.kind == "openbao":
        want = 'Field validation failed: error converting input for field "ttl": time: invalid duration "abc"'
        if (code, message) != (400, want):
            problems.append(f"ttl=abc: {code} {message!r}")
    elif code != 400 or not message.startswith("ttl must be a duration") or "abc" in message:
        problems.append(f"ttl=abc: {code} {message!r}")
    if state() != initial:
        problems.append("ttl=abc left something behind")
    assert not problems, f"{pki.kind}:\n" + "\n".join(problems)


def _short(body):
    return {k: (v[:40] + "…" if isinstance(v, str) and len(v) > 40 else v) for k, v in (body or {}).items()}


# ---- 5. The same sequence against OpenBao and cofferd ----

def test_differential_against_openbao(bao_bin, cofferd_bin):
    ref = Api(start_bao_dev(bao_bin), "openbao", bao_bin)
    ours = Api(start_cofferd_dev(cofferd_bin), "cofferd", bao_bin)
    try:
        problems = _differential(ref, ours)
    finally:
        ref.close()
        ours.close()
    assert not problems, "differences from OpenBao 2.7.2:\n" + "\n".join(problems)


# ---- Role name rules, against OpenBao's answers ----

NAME_ROLES = {
    "sub": {"allowed_domains": "example.com", "allow_subdomains": True},
    "bare": {"allowed_domains": "example.com", "allow_bare_domains": True},
    "both": {"allowed_domains": ["example.com", "other.org"], "allow_subdomains": True, "allow_bare_domains": True},
    "glob": {"allowed_domains": ["*.svc.example.com", "db-*.example.com"], "allow_glob_domains": True},
    "nowild": {"allowed_domains": "example.com", "allow_subdomains": True, "allow_wildcard_certificates": False},
    "noenforce": {"allowed_domains": "example.com", "allow_subdomains": True, "enforce_hostnames": False},
    "nolocal": {"allowed_domains": "example.com", "allow_localhost": False, "allow_subdomains": True},
    "any": {"allow_any_name": True},
    "anynoenforce": {"allow_any_name": True, "enforce_hostnames": False},
    "cnemail": {"allow_any_name": True, "cn_validations": ["email"]},
    "cndisabled": {"allowed_domains": "example.com", "allow_subdomains": True, "cn_validations": ["disabled"]},
}
COMMON_NAMES = [
    "example.com", "www.example.com", "WWW.Example.COM", "a.b.example.com", "*.example.com", "*.a.example.com",
    "a*.example.com", "*b.example.com", "a*b.example.com", "*.*.example.com", "*", "www.example.com.",
    "x..example.com", "evil.com", "notexample.com", "localhost", "LocalHost", "sub.localhost", "*.localhost",
    "a.svc.example.com", "db-1.example.com", "db-.example.com", "-a.example.com", "a_b.example.com",
    "ex ample.com", "user@example.com", "user@www.example.com", "user@evil.com", "a@b@example.com", "foo@",
    "*@example.com", "www.other.org", "other.org", "\u00e9.example.com", "M\u00fcnchen.example.com",
    "\u65e5\u672c.example.com", "a" * 63 + ".example.com", "a" * 64 + ".example.com",
    ".".join(["a" * 60] * 4) + ".example.com",
]
ALT_NAMES = ["\u00e9.example.com", "a*.example.com", "x..example.com", "my host.example.com", "user@example.com",
             "user@evil.com", "evil.com", "b.example.com, b.example.com,c.example.com"]


def _name_answer(api, role, body):
    """(status, error, the certificate's SANs as openssl prints them) of one issue."""
    code, parsed = api("POST", f"names/issue/{role}", {**body, "ttl": "10m"})
    if code != 200:
        return code, (parsed.get("errors") or [""])[0] if isinstance(parsed, dict) else str(parsed), None
    _, text = openssl("x509", "-noout", "-ext", "subjectAltName", input=parsed["data"]["certificate"])
    return code, "", " ".join(text.split()[3:])


def test_role_name_rules_against_openbao(bao_bin, cofferd_bin):
    """Which common names and alt_names each kind of role allows, and the SANs they become (IDNA to
    Punycode, wildcards per RFC 6125, names that are not host names left out of the SANs), as OpenBao
    2.7.2 answers. One difference on purpose (docs/pki.md): Coffer compares names with
    allowed_domains and localhost without regard to case, so a name in capitals gets from Coffer
    what its lower-case form gets from OpenBao."""
    ref = Api(start_bao_dev(bao_bin), "openbao", bao_bin)
    ours = Api(start_cofferd_dev(cofferd_bin), "cofferd", bao_bin)
    try:
        for api in (ref, ours):
            api.mount("names")
            api.ok("POST", "names/root/generate/internal", {"common_name": "Names Root", "key_type": "ec", "ttl": "2h"})
            for role, body in NAME_ROLES.items():
                api.ok("POST", f"names/roles/{role}", {**body, "key_type": "ec", "max_ttl": "1h"}, status=(200, 204))
        cases = [(role, {"common_name": name}) for role in NAME_ROLES for name in COMMON_NAMES]
        cases += [(role, {"common_name": "ok.example.com", "alt_names": alt})
                  for role in ("sub", "noenforce", "any") for alt in ALT_NAMES]
        problems, refused, punycode = [], 0, 0
        for role, body in cases:
            theirs, mine = _name_answer(ref, role, body), _name_answer(ours, role, body)
            refused += theirs[0] != 200
            punycode += "xn--" in (theirs[2] or "")
            if mine == theirs:
                continue
            name = body.get("alt_names", body["common_name"])
            if name != name.lower():
                lower = _name_answer(ref, role, {**body, **{k: v.lower() for k, v in body.items()}})
                if mine[0] == 200 and tuple(str(x).lower() for x in mine) == tuple(str(x).lower() for x in lower):
                    continue
            problems.append(f"{role} {body}: OpenBao {theirs}, Coffer {mine}")
        # The table covers both answers and the IDNA conversion, so it can tell rules apart.
        assert 100 < refused < len(cases) - 100 and punycode >= 10, (refused, punycode, len(cases))
    finally:
        ref.close()
        ours.close()
    assert not problems, f"{len(problems)} of {len(cases)} answers differ from OpenBao 2.7.2:\n" + "\n".join(problems)


UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _messages(body, own=None):
    """Error (or warning) texts compared across servers (PKI 500s are multierrors in both, docs/compatibility.md);
    ids and the server's own value (a serial, a PEM) replaced."""
    out = []
    for e in body.get("errors", []):
        e = re.sub(UUID, "<id>", e)
        out.append(e.replace(own, "<own>") if own else e)
    return out


def _shape_diff(ref, ours, where):
    """The differences between two shapes, one line each: keys missing or extra, types that differ."""
    if isinstance(ref, dict) and isinstance(ours, dict):
        out = [f"{where}.{k}: missing (OpenBao has {ref[k]})".lstrip(".") for k in ref if k not in ours]
        out += [f"{where}.{k}: extra (OpenBao has no such key)".lstrip(".") for k in ours if k not in ref]
        for k in ref:
            if k in ours:
                out += _shape_diff(ref[k], ours[k], f"{where}.{k}".lstrip("."))
        return out
    return [] if ref == ours else [f"{where}: {ours}, OpenBao {ref}"]


def _ids_out(value):
    """Issuer/key ids are map keys in some answers: replace them so shapes compare."""
    if isinstance(value, dict):
        return {("<id>" if re.fullmatch(UUID, k) else k):
                _ids_out(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ids_out(v) for v in value]
    return value


def _differential(ref, ours):
    problems = []
    mount = "diff"

    def both(label, method, path, body=None, token="default", values=(), same_data=False, cert=(), per_server=None):
        """Sends one request to each server and records every difference. `per_server`: a pair of values
        (OpenBao's, Coffer's) put in place of `{}` in the path and in the body's string values; each server's
        own value in an error text is replaced before the texts are compared."""
        sub = per_server or ("", "")
        (rs, rb) = ref(method, path.format(sub[0]), _fill(body, sub[0]), token)
        (cs, cb) = ours(method, path.format(sub[1]), _fill(body, sub[1]), token)
        where = f"{label} ({method} {path})"
        if rs != cs:
            problems.append(f"{where}: status {cs} {_short(cb)!r}, OpenBao {rs} {_short(rb)!r}")
            return rb, cb
        if not (isinstance(rb, dict) and isinstance(cb, dict)):
            if rb != cb:
                problems.append(f"{where}: body {cb!r}, OpenBao {rb!r}")
            return rb, cb
        if "errors" in rb:
            if rs != 404 and _messages(rb, sub[0]) != _messages(cb, sub[1]):
                problems.append(f"{where}: errors {cb.get('errors')!r}, OpenBao {rb['errors']!r}")
            return rb, cb
        for diff in _shape_diff(shape(_ids_out({**rb, "data": None})), shape(_ids_out({**cb, "data": None})), ""):
            problems.append(f"{where}: envelope {diff}")
        if (rb.get("request_id") == "") != (cb.get("request_id") == ""):
            problems.append(f"{where}: request_id {cb.get('request_id')!r}, OpenBao {rb.get('request_id')!r}")
        for diff in _shape_diff(shape(_ids_out(rb.get("data"))), shape(_ids_out(cb.get("data"))), "data"):
            problems.append(f"{where}: {diff}")
        if _messages({"errors": rb.get("warnings") or []}) != _messages({"errors": cb.get("warnings") or []}):
            problems.append(f"{where}: warnings {cb.get('warnings')!r}, OpenBao {rb.get('warnings')!r}")
        r_data, c_data = rb.get("data") or {}, cb.get("data") or {}
        for key in values:
            if r_data.get(key, "<absent>") != c_data.get(key, "<absent>"):
                problems.append(f"{where}: data.{key} = {c_data.get(key, '<absent>')!r}, "
                                f"OpenBao {r_data.get(key, '<absent>')!r}")
        if same_data and r_data != c_data:
            problems.append(f"{where}: data {c_data!r}, OpenBao {r_data!r}")
        for key in cert:
            if key in r_data and key in c_data:
                compare_certs(f"{where} {key}", r_data[key], c_data[key])
        return rb, cb

    def compare_certs(where, r_pem, c_pem):
        r_shape, c_shape = Cert(r_pem).shape(), Cert(c_pem).shape()
        r_valid, c_valid = r_shape.pop("validity_seconds"), c_shape.pop("validity_seconds")
        if r_shape != c_shape:
            problems.append(f"{where}: certificate\n    coffer  {c_shape}\n    openbao {r_shape}")
        if abs(r_valid - c_valid) > 2:
            problems.append(f"{where}: validity {c_valid} s, OpenBao {r_valid} s")

    def pem_label(pem):
        return re.match(r"-----BEGIN ([A-Z0-9 ]+)-----", pem).group(1) if pem.startswith("-----") else "<not PEM>"

    def data_pair(pair, key):
        return tuple((b or {}).get("data", {}).get(key, "") if isinstance(b, dict) else "" for b in pair)

    both("mount", "POST", f"sys/mounts/{mount}", {"type": "pki", "config": {"max_lease_ttl": "87600h"}})
    both("CA before any issuer", "GET", f"{mount}/ca/pem", token=None)
    both("issue before any issuer", "POST", f"{mount}/issue/web", {"common_name": "www.example.com"})
    # A hostname-like CN: OpenBao copies it into a SAN on the root too.
    root = both("root generate", "POST", f"{mount}/root/generate/internal",
                {"common_name": "root.example.internal", "ttl": "8760h", "key_type": "ec", "key_bits": 256,
                 "issuer_name": "root-2026"}, values=("issuer_name", "key_name"), cert=("certificate", "issuing_ca"))
    both("root generate, a word that is not a type", "POST", f"{mount}/root/generate/nonsense", {"common_name": "x"})
    both("root generate, EC 300 bits", "POST", f"{mount}/root/generate/internal",
         {"common_name": "x", "key_type": "ec", "key_bits": 300})
    urls = {"issuing_certificates": ["http://pki.example.internal/v1/diff/ca"],
            "crl_distribution_points": ["http://pki.example.internal/v1/diff/crl"], "ocsp_servers": []}
    both("config/urls write", "POST", f"{mount}/config/urls", urls, same_data=True)
    both("config/urls read", "GET", f"{mount}/config/urls", same_data=True)
    role = {"allowed_domains": ["example.com"], "allow_subdomains": True, "key_type": "ec", "key_bits": 256,
            "ttl": "72h", "max_ttl": "720h"}
    both("role write", "POST", f"{mount}/roles/web", role, same_data=True)
    both("role read", "GET", f"{mount}/roles/web", same_data=True)
    both("role read missing", "GET", f"{mount}/roles/nope")
    both("role rsa 1000", "POST", f"{mount}/roles/weak", {"key_type": "rsa", "key_bits": 1000})
    both("role rsa", "POST", f"{mount}/roles/rsa", {"allow_any_name": True, "key_type": "rsa"}, same_data=True)
    both("role ed25519", "POST", f"{mount}/roles/ed", {"allow_any_name": True, "key_type": "ed25519"}, same_data=True)
    both("role list", "LIST", f"{mount}/roles", same_data=True)
    issued = both("issue", "POST", f"{mount}/issue/web", {"common_name": "www.example.com", "alt_names": "api.example.com",
                                                          "ip_sans": "127.0.0.1", "ttl": "24h"},
                  values=("private_key_type",), cert=("certificate", "issuing_ca"))
    both("issue past max_ttl", "POST", f"{mount}/issue/web", {"common_name": "b.example.com", "ttl": "9999h"},
         cert=("certificate",))
    both("issue without ttl (role ttl)", "POST", f"{mount}/issue/web", {"common_name": "c.example.com"},
         cert=("certificate",))
    for label, role_name in (("issue rsa", "rsa"), ("issue ed25519", "ed")):
        pair = both(label, "POST", f"{mount}/issue/{role_name}", {"common_name": "k.example.com", "ttl": "1h"},
                    values=("private_key_type",), cert=("certificate",))
        labels = [pem_label(k) for k in data_pair(pair, "private_key")]
        if labels[0] != labels[1]:
            problems.append(f"{label}: private key {labels[1]}, OpenBao {labels[0]}")
    for label, body in (("issue format=der", {"format": "der"}), ("issue format=pem_bundle", {"format": "pem_bundle"}),
                        ("issue private_key_format=pkcs8", {"private_key_format": "pkcs8"})):
        pair = both(label, "POST", f"{mount}/issue/web", {"common_name": "f.example.com", "ttl": "1h", **body})
        for key in ("certificate", "private_key", "issuing_ca"):
            labels = [pem_label(v) for v in data_pair(pair, key)]
            if labels[0] != labels[1]:
                problems.append(f"{label}: {key} starts {labels[1]}, OpenBao {labels[0]}")
    both("issue, bare domain", "POST", f"{mount}/issue/web", {"common_name": "example.com"})
    both("issue, name outside the role", "POST", f"{mount}/issue/web", {"common_name": "www.evil.com"})
    both("issue, SAN outside the role", "POST", f"{mount}/issue/web", {"common_name": "a.example.com",
                                                                       "alt_names": "x.evil.com"})
    both("issue, bad IP", "POST", f"{mount}/issue/web", {"common_name": "a.example.com", "ip_sans": "notanip"})
    both("issue, no common name", "POST", f"{mount}/issue/web", {})
    both("issue, unknown role", "POST", f"{mount}/issue/nope", {"common_name": "www.example.com"})

    d = tempdir()
    csr, _ = make_csr(d, "svc", "/CN=svc.example.com/O=Acme", ["DNS:alt.example.com"])
    both("sign", "POST", f"{mount}/sign/web", {"csr": csr, "ttl": "1h"}, cert=("certificate",))
    both("sign with common_name too", "POST", f"{mount}/sign/web",
         {"csr": csr, "common_name": "x.example.com", "ttl": "1h"}, cert=("certificate",))
    both("sign-verbatim", "POST", f"{mount}/sign-verbatim", {"csr": csr, "ttl": "1h"}, cert=("certificate",))
    both("sign, bad signature", "POST", f"{mount}/sign/web", {"csr": corrupt_signature(csr), "ttl": "1h"})
    both("sign, no PEM", "POST", f"{mount}/sign/web", {"csr": "garbage"})
    rsa_csr, _ = make_csr(d, "rsa", "/CN=r.example.com", key="rsa")
    both("sign, RSA CSR on an EC role", "POST", f"{mount}/sign/web", {"csr": rsa_csr, "ttl": "1h"})

    serials = data_pair(issued, "serial_number")
    both("cert read before revoke", "GET", f"{mount}/cert/{{}}", token=None, per_server=serials)
    both("revoke", "POST", f"{mount}/revoke", {"serial_number": "{}"}, per_server=serials)
    both("revoke again", "POST", f"{mount}/revoke", {"serial_number": "{}"}, per_server=serials)
    both("revoke the CA itself", "POST", f"{mount}/revoke", {"serial_number": "{}"},
         per_server=data_pair(root, "serial_number"))
    both("revoke unknown serial", "POST", f"{mount}/revoke", {"serial_number": "11:22:33"})
    both("revoke without a serial", "POST", f"{mount}/revoke", {})
    both("cert read after revoke", "GET", f"{mount}/cert/{{}}", token=None, per_server=serials)
    both("cert read unknown", "GET", f"{mount}/cert/11:22:33", token=None)
    rb, cb = both("list certs", "LIST", f"{mount}/certs")
    if len(rb["data"]["keys"]) != len(cb["data"]["keys"]):
        problems.append(f"list certs: {len(cb['data']['keys'])} serials, OpenBao {len(rb['data']['keys'])}")
    both("list certs without a token", "LIST", f"{mount}/certs", token=None)
    both("list revoked certs", "LIST", f"{mount}/certs/revoked")
    both("config/crl read", "GET", f"{mount}/config/crl", same_data=True)
    both("config/issuers read", "GET", f"{mount}/config/issuers", values=("default_follows_latest_issuer",))
    both("config/cluster read", "GET", f"{mount}/config/cluster", same_data=True)
    both("issuers list", "LIST", f"{mount}/issuers")
    both("issuer read", "GET", f"{mount}/issuer/root-2026",
         values=("issuer_name", "leaf_not_after_behavior", "usage", "revocation_signature_algorithm", "revoked",
                 "manual_chain", "issuing_certificates", "crl_distribution_points", "ocsp_servers"),
         cert=("certificate",))
    both("issuer read without a token", "GET", f"{mount}/issuer/root-2026", token=None)
    both("issuer read unknown", "GET", f"{mount}/issuer/nope")
    both("issuer rename", "POST", f"{mount}/issuer/root-2026", {"issuer_name": "root-v2"}, values=("issuer_name",))
    both("issuer read by the new name", "GET", f"{mount}/issuer/root-v2", values=("issuer_name",))
    both("keys list", "LIST", f"{mount}/keys")
    both("key read", "GET", f"{mount}/key/default", values=("key_name", "key_type"))
    both("crl rotate", "GET", f"{mount}/crl/rotate", same_data=True)

    for path in ("crl", "crl/pem", "ca", "ca/pem", "ca_chain", "cert/ca", "issuer/root-v2/json", "issuer/root-v2/pem",
                 "issuer/root-v2/der"):
        r, c = ref.raw("GET", f"{mount}/{path}", token=None), ours.raw("GET", f"{mount}/{path}", token=None)
        if (r.status_code, r.headers.get("Content-Type")) != (c.status_code, c.headers.get("Content-Type")):
            problems.append(f"GET {path}: {c.status_code} {c.headers.get('Content-Type')}, "
                            f"OpenBao {r.status_code} {r.headers.get('Content-Type')}")
    r_crl = Crl(ref.raw("GET", f"{mount}/crl", token=None).content)
    c_crl = Crl(ours.raw("GET", f"{mount}/crl", token=None).content)
    if r_crl.shape() != c_crl.shape() or len(r_crl.revoked) != len(c_crl.revoked):
        problems.append(f"CRL\n    coffer  {c_crl.shape()} {c_crl.revoked}\n    openbao {r_crl.shape()} {r_crl.revoked}")

    # An intermediate (P-384) signed by the root, installed on a second mount.
    both("mount intermediate", "POST", f"sys/mounts/{mount}_int", {"type": "pki", "config": {"max_lease_ttl": "43800h"}})
    generated = both("intermediate generate", "POST", f"{mount}_int/intermediate/generate/internal",
                     {"common_name": "Diff Intermediate", "key_type": "ec", "key_bits": 384})
    signed = both("sign-intermediate", "POST", f"{mount}/root/sign-intermediate", {"csr": "{}", "ttl": "4380h"},
                  per_server=data_pair(generated, "csr"), cert=("certificate",))
    both("set-signed", "POST", f"{mount}_int/intermediate/set-signed", {"certificate": "{}"},
         per_server=data_pair(signed, "certificate"))
    both("set-signed again", "POST", f"{mount}_int/intermediate/set-signed", {"certificate": "{}"},
         per_server=data_pair(signed, "certificate"))
    both("set-signed, a leaf", "POST", f"{mount}_int/intermediate/set-signed", {"certificate": "{}"},
         per_server=data_pair(issued, "certificate"))
    both("revoke a certificate of another CA", "POST", f"{mount}_int/revoke", {"certificate": "{}"},
         per_server=data_pair(issued, "certificate"))
    both("intermediate role", "POST", f"{mount}_int/roles/web", role, same_data=True)
    both("issue under the intermediate", "POST", f"{mount}_int/issue/web", {"common_name": "i.example.com", "ttl": "1h"},
         cert=("certificate", "issuing_ca"))
    both("delete the default issuer", "DELETE", f"{mount}_int/issuer/default")
    both("config/issuers after the delete", "GET", f"{mount}_int/config/issuers", same_data=True)
    both("issue with no default issuer", "POST", f"{mount}_int/issue/web", {"common_name": "i.example.com"})

    both("tidy, nothing asked", "POST", f"{mount}/tidy", {})
    both("tidy", "POST", f"{mount}/tidy", {"tidy_cert_store": True, "tidy_revoked_certs": True, "safety_buffer": "1s"})
    deadline = time.monotonic() + 10
    while ref.data("GET", f"{mount}/tidy-status")["state"] != "Finished" and time.monotonic() < deadline:
        time.sleep(0.1)
    both("tidy-status", "GET", f"{mount}/tidy-status",
         values=("state", "tidy_cert_store", "tidy_revoked_certs", "safety_buffer", "revoked_safety_buffer",
                 "issuer_safety_buffer", "cert_store_deleted_count", "revoked_cert_deleted_count", "error", "page_size",
                 "pause_duration"))

    # The bao CLI's view of a role read: the same rows.
    r_out, c_out = ref.cli("read", f"{mount}/roles/web")[1], ours.cli("read", f"{mount}/roles/web")[1]
    if r_out != c_out:
        problems.append(f"bao read {mount}/roles/web differs:\n{c_out}\nOpenBao:\n{r_out}")
    return problems


def _fill(body, value):
    if body is None:
        return None
    return {k: (value if v == "{}" else v) for k, v in body.items()}
