"""Helpers for test_pki.py: the real `openssl` CLI parses every certificate, key, CSR and CRL the
servers hand out (no Python crypto library), and a small client for the HTTP API and the bao CLI."""
import base64
import calendar
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import requests

from conftest import run_bao


# ---- openssl ----

def openssl(*args, input=None, check=True, cwd=None):
    """Runs openssl; returns (exit code, stdout + stderr as text)."""
    if isinstance(input, str):
        input = input.encode()
    p = subprocess.run(["openssl", *args], input=input, capture_output=True, timeout=60, cwd=cwd)
    out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    if check and p.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} exited {p.returncode}:\n{out}")
    return p.returncode, out


def write(directory, name, text):
    path = os.path.join(directory, name)
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(path, mode) as f:
        f.write(text if isinstance(text, bytes) or text.endswith("\n") else text + "\n")
    return path


def pem_blocks(text, label="CERTIFICATE"):
    return re.findall(rf"-----BEGIN {label}-----\n.*?\n-----END {label}-----", text, re.S)


def pem_to_der(pem):
    body = re.search(r"-----BEGIN [A-Z0-9 ]+-----\n(.*?)\n?-----END", pem, re.S).group(1)
    return base64.b64decode("".join(body.split()))


def der_to_pem(der, label):
    b64 = base64.b64encode(der).decode()
    lines = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


def _der_header(der, i):
    """(tag, content start, content length) of the DER element at `i`."""
    tag, n = der[i], der[i + 1]
    if n < 0x80:
        return tag, i + 2, n
    k = n & 0x7F
    return tag, i + 2 + k, int.from_bytes(der[i + 2:i + 2 + k], "big")


def der_serial_length(der):
    _, i, _ = _der_header(der, 0)         # Certificate
    _, i, _ = _der_header(der, i)         # TBSCertificate
    tag, start, length = _der_header(der, i)
    if tag == 0xA0:                       # [0] version
        i = start + length
    tag, _, length = _der_header(der, i)
    assert tag == 0x02, f"serialNumber is not an INTEGER (tag {tag:#x})"
    return length


def _openssl_time(text):
    """`Nov 30 22:42:02 2026 GMT` → Unix seconds."""
    return calendar.timegm(time.strptime(" ".join(text.split()), "%b %d %H:%M:%S %Y %Z"))


def _extensions(text, start="X509v3 extensions:"):
    """[(name, critical, value text)] in the order openssl prints them."""
    out = []
    lines = text.splitlines()
    try:
        i = next(n for n, line in enumerate(lines) if line.strip() == start)
    except StopIteration:
        return out
    indent = None
    for line in lines[i + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        if depth == indent:
            m = re.fullmatch(r"\s*(.+?):\s*(critical)?\s*", line)
            out.append([m.group(1), bool(m.group(2)), ""])
        else:
            out[-1][2] += ("\n" if out[-1][2] else "") + line.strip()
    return [tuple(e) for e in out]


class Cert:
    """A certificate as `openssl x509` reads it."""

    def __init__(self, pem):
        self.pem = pem_blocks(pem)[0] + "\n"
        _, self.text = openssl("x509", "-noout", "-text", input=self.pem)
        _, fields = openssl("x509", "-noout", "-serial", "-subject", "-issuer", "-startdate", "-enddate",
                            "-nameopt", "RFC2253", input=self.pem)
        f = dict(line.split("=", 1) for line in fields.splitlines() if "=" in line)
        self.serial_hex = f["serial"].lower()
        self.subject = f["subject"]
        self.issuer = f["issuer"]
        self.not_before = _openssl_time(f["notBefore"])
        self.not_after = _openssl_time(f["notAfter"])
        self.extensions = _extensions(self.text)
        self.ext = {name: (critical, value) for name, critical, value in self.extensions}
        self.signature_algorithm = re.search(r"Signature Algorithm: (\S+)", self.text).group(1)
        self.version = re.search(r"Version: (\d+)", self.text).group(1)
        self.public_key = openssl("x509", "-noout", "-pubkey", input=self.pem)[1]

    @property
    def serial_bytes(self):
        """Length of the serialNumber INTEGER's contents in the DER (RFC 5280: at most 20 octets)."""
        return der_serial_length(pem_to_der(self.pem))

    @property
    def serial_colon(self):
        h = self.serial_hex if len(self.serial_hex) % 2 == 0 else "0" + self.serial_hex
        return ":".join(h[i:i + 2] for i in range(0, len(h), 2))

    def ext_names(self):
        return [name for name, _, _ in self.extensions]

    def san(self):
        value = self.ext.get("X509v3 Subject Alternative Name", (False, ""))[1]
        return [s.strip() for s in value.split(",") if s.strip()]

    def shape(self):
        """What the differential compares: never bytes, names or times."""
        return {"version": self.version, "signature_algorithm": self.signature_algorithm,
                "serial_bytes_at_most_20": self.serial_bytes <= 20,
                "extensions": [(name, critical) for name, critical, _ in self.extensions],
                "validity_seconds": self.not_after - self.not_before,
                "key": re.search(r"Public Key Algorithm: (\S+)", self.text).group(1)}


class Crl:
    def __init__(self, data):
        pem = data if isinstance(data, str) else None
        args = ["crl", "-noout", "-text"] + ([] if pem else ["-inform", "DER"])
        _, self.text = openssl(*args, input=data)
        self.pem = pem or openssl("crl", "-inform", "DER", input=data)[1]
        self.revoked = [s.lower() for s in re.findall(r"Serial Number: ([0-9A-F]+)", self.text)]
        self.version = re.search(r"Version (\d+)", self.text).group(1)
        self.signature_algorithm = re.search(r"Signature Algorithm: (\S+)", self.text).group(1)
        self.last_update = _openssl_time(re.search(r"Last Update: (.+)", self.text).group(1))
        self.next_update = _openssl_time(re.search(r"Next Update: (.+)", self.text).group(1))
        self.extensions = _extensions(self.text, "CRL extensions:")
        self.number = int(re.search(r"X509v3 CRL Number: *\n\s*(\d+)", self.text).group(1))
        self.issuer = openssl("crl", "-noout", "-issuer", "-nameopt", "RFC2253", input=self.pem)[1].strip()
        self.issuer = self.issuer.removeprefix("issuer=")

    def lists(self, serial):
        """`serial` in colon form (aa:bb:…)."""
        return serial.replace(":", "").lower().lstrip("0") in [s.lstrip("0") for s in self.revoked]

    def shape(self):
        return {"version": self.version, "signature_algorithm": self.signature_algorithm,
                "extensions": [(name, critical) for name, critical, _ in self.extensions],
                "next_update_after_last": self.next_update - self.last_update,
                "entry_extensions": "CRL entry extensions" in self.text}


def pubkey_of_private(pem):
    return openssl("pkey", "-pubout", input=pem)[1]


def make_csr(directory, name, subject, sans=(), key="ec"):
    """A key and a CSR made by `openssl req`; returns (csr pem, key pem)."""
    keyopt = {"ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
              "rsa": ["-newkey", "rsa:2048"], "ed25519": ["-newkey", "ed25519"]}[key]
    extra = ["-addext", "subjectAltName=" + ",".join(sans)] if sans else []
    openssl("req", "-new", *keyopt, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
            *extra, cwd=directory)
    with open(os.path.join(directory, f"{name}.csr")) as f, open(os.path.join(directory, f"{name}.key")) as k:
        return f.read(), k.read()


def corrupt_signature(csr_pem):
    """The CSR with one bit of its signature flipped (the last byte of the DER is inside the signature
    BIT STRING), re-armoured: still parseable, no longer self-signed."""
    der = bytearray(pem_to_der(csr_pem))
    der[-1] ^= 0x01
    return der_to_pem(bytes(der), "CERTIFICATE REQUEST")


# ---- the servers ----

def unwrap_multierror(message):
    m = re.fullmatch(r"1 error occurred:\n\t\* (.*)\n\n", message, re.S)
    return m.group(1) if m else message


class Api:
    """HTTP API of one server; `kind` is "openbao" or "cofferd"."""

    def __init__(self, server, kind, bao_bin=None, token="root"):
        self.server, self.kind, self.bao_bin, self.token = server, kind, bao_bin, token
        self.addr = server.addr
        self.session = requests.Session()

    def close(self):
        """Closes the kept-alive connections (a server waits for open ones when it stops), then the server."""
        self.session.close()
        self.server.stop()

    def raw(self, method, path, body=None, token="default", headers=None):
        h = dict(headers or {})
        token = self.token if token == "default" else token
        if token:
            h["X-Vault-Token"] = token
        return self.session.request(method, f"{self.addr}/v1/{path}", json=body, headers=h, timeout=60,
                                    verify=self.server.verify)

    def __call__(self, method, path, body=None, token="default", headers=None):
        r = self.raw(method, path, body, token, headers)
        try:
            parsed = r.json() if r.content else None
        except ValueError:
            parsed = r.text
        return r.status_code, parsed

    def ok(self, method, path, body=None, status=(200,)):
        code, parsed = self(method, path, body)
        assert code in ((status,) if isinstance(status, int) else status), (self.kind, method, path, code, parsed)
        return parsed

    def data(self, method, path, body=None):
        return self.ok(method, path, body)["data"]

    def mount(self, path, max_ttl="87600h"):
        self.ok("POST", f"sys/mounts/{path}", {"type": "pki", "config": {"max_lease_ttl": max_ttl}}, status=204)

    def keys(self, path):
        code, parsed = self("LIST", path)
        if code == 404:
            return []
        assert code == 200, (self.kind, path, code, parsed)
        return parsed["data"]["keys"]

    def error(self, method, path, body=None, token="default"):
        """(status, the one error message) of a refused request."""
        code, parsed = self(method, path, body, token)
        assert isinstance(parsed, dict) and isinstance(parsed.get("errors"), list), (self.kind, path, code, parsed)
        assert len(parsed["errors"]) == 1, (self.kind, path, code, parsed)
        return code, parsed["errors"][0]

    def error_500(self, method, path, body=None):
        """A 500 of the PKI engine: the message wrapped as a Go multierror, by OpenBao and Coffer alike
        (docs/compatibility.md, PKI). Returns the message."""
        code, message = self.error(method, path, body)
        assert code == 500, (self.kind, path, code, message)
        assert message != unwrap_multierror(message), f"a PKI 500 is a multierror: {message!r}"
        return unwrap_multierror(message)

    def cli(self, *args, check=True, format=None, input=None):
        return run_bao(self.bao_bin, self.addr, *args, token=self.token, check=check, format=format, input=input)

    def cli_json(self, *args):
        _, out, err = self.cli(*args, format="json")
        return json.loads(out), err

    def root(self, mount, common_name, key_type="ec", **extra):
        self.mount(mount)
        body = {"common_name": common_name, "ttl": "87600h", "key_type": key_type, **extra}
        return self.data("POST", f"{mount}/root/generate/internal", body)


_TEMPDIRS = []


def tempdir():
    path = tempfile.mkdtemp(prefix="coffer-pkitest-")
    _TEMPDIRS.append(path)
    return path


def remove_tempdirs():
    while _TEMPDIRS:
        shutil.rmtree(_TEMPDIRS.pop(), ignore_errors=True)
