"""A real OpenLDAP server (Debian `slapd`) for the LDAP auth tests: started in a temporary directory on
free loopback ports (ldap:// with StartTLS, and ldaps://), with its own CA and server certificate, the
`memberof` overlay (users carry `memberOf`, as in Active Directory) and a small directory:

    dc=example,dc=org
      cn=admin            the bind account (rootdn), password ADMIN_PW
      ou=users            uid=alice, uid=bob, uid=carol (cn = uid, password "<name>-pw");
                          alice also has userPrincipalName alice@example.org
      ou=groups           groupOfNames: devs {alice}, engineering {cn=devs}, staff {cn=engineering},
                          ops {bob}

so alice is directly in devs, in engineering one level up and in staff two levels up. slapd runs in
the foreground (`-d 0`) as a child of the test and is stopped by its pid; nothing else is touched.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

from authtools import make_tls
from conftest import free_port, stop_process

BASE = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{BASE}"
ADMIN_PW = "admin-secret-bindpass"
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
GROUPS = {  # name -> member DNs
    "devs": [f"uid=alice,ou=users,{BASE}"],
    "engineering": [f"cn=devs,ou=groups,{BASE}"],
    "staff": [f"cn=engineering,ou=groups,{BASE}"],
    "ops": [f"uid=bob,ou=users,{BASE}"],
}

CONF = """
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
# Active Directory's login name attribute, so upndomain can be tested (alice carries it).
attributetype ( 1.3.6.1.4.1.4203.666.11.99.1 NAME 'userPrincipalName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
TLSCACertificateFile {dir}/ca.pem
TLSCertificateFile {dir}/idp.crt
TLSCertificateKeyFile {dir}/idp.key
database mdb
maxsize 10485760
suffix "{base}"
rootdn "{admin}"
rootpw {adminpw}
directory {dir}/db
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint true
access to attrs=userPassword by anonymous auth by * none
access to * by * read
"""


class Slapd:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="coffer-slapd-")
        os.mkdir(os.path.join(self.dir, "db"))
        self.ca_pem, cert, key = make_tls(self.dir)
        with open(os.path.join(self.dir, "ca.pem"), "w") as f:
            f.write(self.ca_pem)
        with open(os.path.join(self.dir, "slapd.conf"), "w") as f:
            f.write(CONF.format(dir=self.dir, base=BASE, admin=ADMIN_DN, adminpw=ADMIN_PW))
        self.port, self.tls_port = free_port(), free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_url = f"ldaps://127.0.0.1:{self.tls_port}"
        self.log = open(os.path.join(self.dir, "slapd.log"), "w")
        self.proc = subprocess.Popen(
            ["/usr/sbin/slapd", "-d", "0", "-f", os.path.join(self.dir, "slapd.conf"),
             "-h", f"{self.url}/ {self.ldaps_url}/"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.proc.returncode}:\n{self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"slapd did not listen:\n{self.output()}")
                time.sleep(0.05)
        self.ldapadd(self.ldif())

    def output(self):
        with open(os.path.join(self.dir, "slapd.log"), errors="replace") as f:
            return f.read()

    @staticmethod
    def ldif():
        out = [f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
               f"dn: ou=users,{BASE}\nobjectClass: organizationalUnit\nou: users\n",
               f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n"]
        for name, pw in USERS.items():
            upn = (f"objectClass: extensibleObject\nuserPrincipalName: {name}@example.org\n"
                   if name == "alice" else "")
            out.append(f"dn: uid={name},ou=users,{BASE}\nobjectClass: inetOrgPerson\n{upn}uid: {name}\ncn: {name}\n"
                       f"sn: {name.title()}\nmail: {name}@example.org\nuserPassword: {pw}\n")
        for name, members in GROUPS.items():
            out.append(f"dn: cn={name},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {name}\n"
                       + "".join(f"member: {m}\n" for m in members))
        return "\n".join(out)

    def ldapadd(self, text):
        subprocess.run(["ldapadd", "-x", "-H", self.url, "-D", ADMIN_DN, "-w", ADMIN_PW],
                       input=text, text=True, check=True, capture_output=True, timeout=20)

    def ldapmodify(self, text):
        subprocess.run(["ldapmodify", "-x", "-H", self.url, "-D", ADMIN_DN, "-w", ADMIN_PW],
                       input=text, text=True, check=True, capture_output=True, timeout=20)

    def stop(self):
        stop_process(self.proc, 10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class SilentListener:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers (a hung LDAP server)."""

    def __init__(self):
        import threading
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.accepted = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def stop(self):
        self.running = False
        self.sock.close()
        for c in self.accepted:
            c.close()


class HostileServer:
    """A TCP listener on 127.0.0.1 that answers every connection with `reply` (raw bytes, as soon as
    the first request arrives) and then keeps the connection open: a misbehaving LDAP server."""

    def __init__(self, reply):
        import threading
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.conns = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            try:
                conn.settimeout(5)
                conn.recv(4096)
                conn.sendall(self.reply)
            except OSError:
                pass

    def stop(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def _ber(tag, content):
    n = len(content)
    if n < 0x80:
        head = bytes([tag, n])
    else:
        size = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([tag, 0x80 | len(size)]) + size
    return head + content


def _octets(text, tag=0x04):
    return _ber(tag, text.encode() if isinstance(text, str) else text)


def _result(tag, code=0):
    return _ber(tag, bytes([0x0A, 0x01, code]) + _octets("") + _octets(""))


def ldap_message(message_id, op):
    return _ber(0x30, bytes([0x02, 0x01, message_id]) + op)


class FakeLDAP:
    """A scripted LDAP server on 127.0.0.1: every bind succeeds; a search is answered by
    `search(message_id)` (bytes to send). `trickle` sends the answers one byte every `trickle`
    seconds. Handles one request at a time per connection; message ids below 128 only."""

    def __init__(self, search, trickle=None, tls=None, hang_up=False):
        """`tls`: an ssl.SSLContext to serve ldaps:// with (the handshake runs in the connection's thread)."""
        import threading
        self.search, self.trickle, self.tls, self.hang_up = search, trickle, tls, hang_up
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"{'ldaps' if tls else 'ldap'}://127.0.0.1:{self.sock.getsockname()[1]}"
        self.handshake_errors = []
        self.conns = []
        self.running = True
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        import threading
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        if self.tls:
            import ssl
            try:
                conn.settimeout(5)
                conn = self.tls.wrap_socket(conn, server_side=True)
                self.conns.append(conn)
            except (ssl.SSLError, OSError) as e:
                self.handshake_errors.append(str(e))
                conn.close()
                return
            if self.hang_up:  # a server that drops the connection right after the handshake
                conn.close()
                return
        try:
            while self.running:
                data = conn.recv(65536)
                if not data or len(data) < 6:
                    return
                message_id, op = data[4], data[5]
                if op == 0x60:
                    answer = ldap_message(message_id, _result(0x61))
                elif op == 0x63:
                    answer = self.search(message_id)
                else:
                    return
                if self.trickle:
                    for i in range(len(answer)):
                        if not self.running:
                            return
                        conn.sendall(answer[i:i + 1])
                        time.sleep(self.trickle)
                else:
                    conn.sendall(answer)
        except OSError:
            pass

    def stop(self):
        self.running = False
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def search_entries(count, dn="uid=alice,ou=users,dc=example,dc=org"):
    """A search answer of `count` entries, then success."""
    def answer(message_id):
        entry = ldap_message(message_id, _ber(0x64, _octets(dn) + _ber(0x30, b"")))
        return entry * count + ldap_message(message_id, _result(0x65))
    return answer


def client_certificate(directory):
    """A CA, and a client certificate (clientAuth) it signed: (ca path, cert pem, key pem)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Coffer test client CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coffer")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path = os.path.join(directory, "client-ca.pem")
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    return (ca_path, cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())
