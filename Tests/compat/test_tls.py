"""cofferd's TLS listener against the real `openssl s_client`, the bao CLI and hvac: the version floor
(TLS 1.2 by default), tls_min_version/tls_max_version, tls_cipher_suites, and client certificates
required and verified against tls_client_ca_file. Certificates are made with openssl in a temp dir."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import hvac
import pytest
import requests

from conftest import free_port, start_cofferd_config, stop_process

REQUEST = b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def issue(directory, name, ca, usage):
    """A P-256 key and a certificate for `name` signed by `ca` (a name in `directory`), or self-signed."""
    with open(os.path.join(directory, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    signer = ["-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial"] if ca else ["-key", f"{name}.key"]
    openssl("x509", "-req", "-in", f"{name}.csr", *signer, "-out", f"{name}.crt", "-days", "2",
            "-extfile", f"{name}.ext", cwd=directory)
    return os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")


@pytest.fixture(scope="module")
def pki():
    directory = tempfile.mkdtemp(prefix="coffer-pki-")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN=coffer test {ca}",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=directory)
    issue(directory, "server", "ca", "serverAuth")
    issue(directory, "client", "ca", "clientAuth")
    issue(directory, "stranger", "other-ca", "clientAuth")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def start_tls(cofferd_bin, pki, workdir, extra=""):
    config = """
storage "memory" {{}}
listener "tcp" {{
  address       = "{addr}"
  tls_cert_file = "%s/server.crt"
  tls_key_file  = "%s/server.key"
%s
}}
""" % (pki, pki, extra)
    return start_cofferd_config(cofferd_bin, config, workdir, scheme="https", verify=f"{pki}/ca.crt")


class RawServer:
    """cofferd started without an HTTPS probe (a listener that requires client certificates refuses
    the fixture's probe); ready once its port accepts TCP connections."""

    def __init__(self, cofferd_bin, text, directory):
        self.hostport = f"127.0.0.1:{free_port()}"
        path = os.path.join(directory, "coffer.hcl")
        with open(path, "w") as f:
            f.write(text.format(addr=self.hostport))
        self.log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([cofferd_bin, f"-config={path}"], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        host, port = self.hostport.split(":")
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"cofferd exited: {self.output()}"
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "cofferd did not start listening"
                time.sleep(0.05)

    def output(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self):
        stop_process(self.proc, 15)


def s_client(hostport, pki, *args):
    """Runs `openssl s_client` with `args`, sends one request; (served, output)."""
    p = subprocess.run(["openssl", "s_client", "-connect", hostport, "-CAfile", f"{pki}/ca.crt", "-verify_return_error",
                        "-ign_eof", *args], input=REQUEST, capture_output=True, timeout=30)
    out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    return "HTTP/1.1 200 OK" in out, out


# The client allows TLS 1.0/1.1 and their SHA-1 suites (OpenSSL's security level 0): a refusal is the server's.
OLD_CLIENT = ["-cipher", "DEFAULT:@SECLEVEL=0"]


def test_tls_12_is_the_floor_by_default_and_tls_min_version_lowers_or_raises_it(cofferd_bin, pki, workdir):
    server = start_tls(cofferd_bin, pki, workdir)
    try:
        for version in ("-tls1", "-tls1_1"):
            served, out = s_client(server.hostport, pki, version, *OLD_CLIENT)
            assert not served, f"{version} was accepted:\n{out}"
        served, out = s_client(server.hostport, pki, "-tls1_2")
        assert served and "Protocol  : TLSv1.2" in out, out
        served, out = s_client(server.hostport, pki, "-tls1_3")
        assert served and "TLSv1.3" in out, out
    finally:
        server.stop()

    # The same client does speak TLS 1.0 to a listener that allows it: the refusals above are the server's.
    server = start_tls(cofferd_bin, pki, workdir, 'tls_min_version = "tls10"')
    try:
        served, out = s_client(server.hostport, pki, "-tls1", *OLD_CLIENT)
        assert served and "Protocol  : TLSv1\n" in out, out
    finally:
        server.stop()

    server = start_tls(cofferd_bin, pki, workdir, 'tls_min_version = "tls13"')
    try:
        assert not s_client(server.hostport, pki, "-tls1_2")[0]
        assert s_client(server.hostport, pki, "-tls1_3")[0]
    finally:
        server.stop()


def test_tls_max_version_and_cipher_suites(cofferd_bin, pki, workdir):
    server = start_tls(cofferd_bin, pki, workdir, """
  tls_max_version   = "tls12"
  tls_cipher_suites = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_AES_128_GCM_SHA256"
""")
    try:
        served, out = s_client(server.hostport, pki, "-tls1_3")
        assert not served, f"TLS 1.3 was accepted above tls_max_version:\n{out}"
        served, out = s_client(server.hostport, pki, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
        assert not served, f"a suite outside tls_cipher_suites was accepted:\n{out}"
        served, out = s_client(server.hostport, pki, "-tls1_2")
        assert served and "Cipher is ECDHE-ECDSA-AES256-GCM-SHA384" in out, out
        assert requests.get(server.addr + "/v1/sys/seal-status", verify=f"{pki}/ca.crt").status_code == 200
    finally:
        server.stop()


def test_client_certificates_required_and_verified(cofferd_bin, pki, workdir):
    server = RawServer(cofferd_bin, """
storage "memory" {{}}
listener "tcp" {{
  address                            = "{addr}"
  tls_cert_file                      = "%s/server.crt"
  tls_key_file                       = "%s/server.key"
  tls_require_and_verify_client_cert = true
  tls_client_ca_file                 = "%s/ca.crt"
}}
""" % (pki, pki, pki), workdir)
    addr = f"https://{server.hostport}"
    try:
        for version in ("-tls1_2", "-tls1_3"):
            served, out = s_client(server.hostport, pki, version)
            assert not served, f"a client without a certificate was served ({version}):\n{out}"
            served, out = s_client(server.hostport, pki, version, "-cert", f"{pki}/stranger.crt", "-key", f"{pki}/stranger.key")
            assert not served, f"a certificate from another CA was accepted ({version}):\n{out}"
            served, out = s_client(server.hostport, pki, version, "-cert", f"{pki}/client.crt", "-key", f"{pki}/client.key")
            assert served, f"a certificate signed by tls_client_ca_file was refused ({version}):\n{out}"
        served, out = s_client(server.hostport, pki, "-tls1_2")
        assert "Acceptable client certificate CA names" in out and "coffer test ca" in out, out

        # The bao CLI and hvac, with and without a certificate.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env.update(BAO_ADDR=addr, BAO_CACERT=f"{pki}/ca.crt", HOME=tempfile.gettempdir())
        bao = os.environ["COFFER_BAO"]
        p = subprocess.run([bao, "status", "-format=json"], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and "Initialized" not in p.stdout, p.stdout + p.stderr
        env.update(BAO_CLIENT_CERT=f"{pki}/client.crt", BAO_CLIENT_KEY=f"{pki}/client.key")
        p = subprocess.run([bao, "status", "-format=json"], env=env, capture_output=True, text=True, timeout=60)
        assert json.loads(p.stdout)["initialized"] is False, p.stdout + p.stderr  # exit 2: sealed

        client = hvac.Client(url=addr, cert=(f"{pki}/client.crt", f"{pki}/client.key"), verify=f"{pki}/ca.crt")
        assert client.sys.read_seal_status()["initialized"] is False
        with pytest.raises(requests.exceptions.ConnectionError):
            hvac.Client(url=addr, verify=f"{pki}/ca.crt").sys.read_seal_status()
    finally:
        server.stop()


def test_an_unreadable_client_ca_file_stops_the_start(cofferd_bin, pki, workdir):
    path = os.path.join(workdir, "bad.hcl")
    with open(path, "w") as f:
        f.write(f"""
listener "tcp" {{
  tls_cert_file                      = "{pki}/server.crt"
  tls_key_file                       = "{pki}/server.key"
  tls_require_and_verify_client_cert = true
  tls_client_ca_file                 = "{workdir}/missing.pem"
}}
""")
    p = subprocess.run([cofferd_bin, f"-config={path}"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "cannot read the CA certificates from tls_client_ca_file" in p.stderr, p.stderr
