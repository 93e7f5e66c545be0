import Foundation
import Testing

/// Test fixtures for the JWT/OIDC and Kubernetes auth methods: real keys made by the `openssl`
/// CLI, JWTs signed with them (a tiny signer: `openssl dgst`/`pkeyutl` over the signing input), and
/// a real HTTPS server on a loopback port.
///
/// The server (`FakeIdentityProvider`) is a small python3 script (stdlib `http.server` + `ssl`,
/// a self-signed certificate for 127.0.0.1 made by `openssl`). It plays three parts, none of them
/// the real thing: an OIDC provider (discovery document, JWKS, `/authorize` that redirects with a
/// code, `/token` that checks the client credentials and the PKCE verifier and answers the ID token
/// the test left in a file), and a Kubernetes API server that answers
/// `POST /apis/authentication.k8s.io/v1/tokenreviews` in the real `authentication.k8s.io/v1`
/// TokenReview schema with the `status` the test left in a file. No cluster runs here. Every
/// request is logged (method, path, headers, body) for the test to check.
final class FakeIdentityProvider: @unchecked Sendable {  // immutable after init; stopped once
    let directory = TemporaryDirectory()
    let process = Process()
    let port: Int
    let caPEM: String
    var url: String { "https://127.0.0.1:\(port)" }

    init() throws {
        let dir = directory.path
        try FakeIdentityProvider.script.write(toFile: dir + "/fake_idp.py", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(
            atPath: dir + "/files/.well-known",
            withIntermediateDirectories: true
        )
        try runTool(
            "openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                dir + "/tls.key", "-out", dir + "/tls.crt", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
            ]
        )
        caPEM = try String(contentsOfFile: dir + "/tls.crt", encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", dir + "/fake_idp.py", dir, dir + "/tls.crt", dir + "/tls.key"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var found: Int? = nil
        for _ in 0..<200 {
            if let text = try? String(contentsOfFile: dir + "/port", encoding: .utf8), let p = Int(text) {
                found = p
                break
            }
            guard process.isRunning else { break }
            usleep(25_000)
        }
        guard let found else {
            process.terminate()
            throw TestFailure("the fake identity provider did not start")
        }
        port = found
    }

    deinit { stop() }

    func stop() {
        if process.isRunning {
            // SIGKILL: the test runner may start children with SIGTERM blocked.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Serves `content` at `/<name>`.
    func serve(_ name: String, _ content: String) throws {
        try content.write(toFile: directory.path + "/files/" + name, atomically: true, encoding: .utf8)
    }

    /// Writes a control file (`id_token`, `client.json`, `tokenreview.json`).
    func control(_ name: String, _ content: String) throws {
        try content.write(toFile: directory.path + "/" + name, atomically: true, encoding: .utf8)
    }

    /// The requests received so far.
    func requests() -> [JSONValue] {
        guard let text = try? String(contentsOfFile: directory.path + "/requests.log", encoding: .utf8) else {
            return []
        }
        return text.split(separator: "\n").compactMap { try? JSONValue.parse(String($0)) }
    }

    func requests(to path: String) -> [JSONValue] { requests().filter { $0["path"]?.stringValue == path } }

    /// An OIDC discovery document for this server, its issuer being its URL.
    func serveDiscovery() throws {
        let doc: JSONValue = [
            "issuer": .string(url), "authorization_endpoint": .string(url + "/authorize"),
            "token_endpoint": .string(url + "/token"), "jwks_uri": .string(url + "/jwks"),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"], "response_types_supported": ["code"],
        ]
        try serve(".well-known/openid-configuration", String(decoding: doc.serialized(), as: UTF8.self))
    }

    func serveJWKS(_ keys: [TestKey]) throws {
        let set: JSONValue = ["keys": .array(keys.map { .object($0.jwk) })]
        try serve("jwks", String(decoding: set.serialized(), as: UTF8.self))
    }

    static let script = """
        import base64, hashlib, http.server, json, os, secrets, ssl, sys, threading, time, urllib.parse

        root = sys.argv[1]
        cert = sys.argv[2] if len(sys.argv) > 2 else ""
        key = sys.argv[3] if len(sys.argv) > 3 else ""
        codes = {}
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def record(self, body):
                entry = {"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                         "body": body.decode("utf-8", "replace")}
                with lock:
                    with open(os.path.join(root, "requests.log"), "a") as f:
                        f.write(json.dumps(entry) + "\\n")

            def send(self, status, body, ctype="application/json", headers=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self.record(b"")
                url = urllib.parse.urlparse(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/hang":
                    time.sleep(30)
                    return
                if url.path == "/huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(100 * 1024 * 1024))
                    self.end_headers()
                    chunk = b" " * 65536
                    try:
                        for _ in range(1600):
                            self.wfile.write(chunk)
                    except Exception:
                        pass
                    return
                if url.path == "/authorize":
                    code = secrets.token_hex(8)
                    with lock:
                        codes[code] = (q.get("code_challenge", ""), q.get("redirect_uri", ""), q.get("nonce", ""))
                    sep = "&" if "?" in q["redirect_uri"] else "?"
                    loc = q["redirect_uri"] + sep + urllib.parse.urlencode({"code": code, "state": q.get("state", "")})
                    self.send(302, b"", headers={"Location": loc})
                    return
                path = os.path.join(root, "files", url.path.lstrip("/"))
                chunked = False
                if url.path.startswith("/chunked/"):
                    path = os.path.join(root, "files", url.path[len("/chunked/"):])
                    chunked = True
                if not os.path.isfile(path):
                    self.send(404, b'{"error":"not found"}')
                    return
                data = open(path, "rb").read()
                if chunked:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(data), 7):
                        part = data[i:i + 7]
                        self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(part), part))
                    self.wfile.write(b"0\\r\\n\\r\\n")
                    return
                self.send(200, data)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                self.record(body)
                url = urllib.parse.urlparse(self.path)
                if url.path == "/token":
                    form = dict(urllib.parse.parse_qsl(body.decode()))
                    client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
                    auth = self.headers.get("Authorization", "")
                    if auth.startswith("Basic "):
                        pair = base64.b64decode(auth[6:]).decode()
                        client_id, _, client_secret = pair.partition(":")
                        client_id, client_secret = urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(client_secret)
                    expected = json.load(open(os.path.join(root, "client.json")))
                    if client_id != expected["id"] or client_secret != expected["secret"]:
                        self.send(401, b'{"error":"invalid_client"}')
                        return
                    with lock:
                        entry = codes.pop(form.get("code", ""), None)
                    if entry is None or form.get("grant_type") != "authorization_code" or form.get("redirect_uri") != entry[1]:
                        self.send(400, b'{"error":"invalid_grant"}')
                        return
                    verifier = form.get("code_verifier", "")
                    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                    if challenge != entry[0]:
                        self.send(400, b'{"error":"invalid_grant","error_description":"PKCE"}')
                        return
                    id_token = open(os.path.join(root, "id_token")).read().strip()
                    self.send(200, json.dumps({"access_token": "at", "token_type": "Bearer", "expires_in": 60,
                                               "id_token": id_token}).encode())
                    return
                if url.path == "/apis/authentication.k8s.io/v1/tokenreviews":
                    request = json.loads(body or b"{}")
                    status = {"user": {}}
                    p = os.path.join(root, "tokenreview.json")
                    if os.path.isfile(p):
                        status = json.load(open(p))
                    out = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                           "metadata": {"creationTimestamp": None}, "spec": request.get("spec", {}), "status": status}
                    self.send(201, json.dumps(out).encode())
                    return
                self.send(404, b'{"error":"not found"}')

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        with open(os.path.join(root, "port.tmp"), "w") as f:
            f.write(str(server.server_address[1]))
        os.rename(os.path.join(root, "port.tmp"), os.path.join(root, "port"))
        server.serve_forever()

        """
}

/// Runs a tool, returning its standard output; throws with its standard error when it fails.
@discardableResult
func runTool(_ tool: String, _ arguments: [String]) throws -> Data {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [tool] + arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let out = output.fileHandleForReading.readDataToEndOfFile()
    let err = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw TestFailure("\(tool) \(arguments.joined(separator: " ")): \(String(decoding: err, as: UTF8.self))")
    }
    return out
}

/// A key pair made by `openssl`, with its public key as PEM and as a JWK, and a JWS signer.
final class TestKey: @unchecked Sendable {  // immutable after init
    enum Kind: String { case rsa, p256, p384, p521, ed25519 }
    let kind: Kind
    let kid: String
    let directory = TemporaryDirectory()
    let publicPEM: String
    let jwk: [String: JSONValue]
    var privatePath: String { directory.path + "/key.pem" }

    init(_ kind: Kind, kid: String = "k1") throws {
        self.kind = kind
        self.kid = kid
        let key = directory.path + "/key.pem"
        switch kind {
        case .rsa:
            try runTool("openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key])
        case .p256, .p384, .p521:
            let curve = ["p256": "P-256", "p384": "P-384", "p521": "P-521"][kind.rawValue]!
            try runTool(
                "openssl",
                ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:\(curve)", "-out", key]
            )
        case .ed25519: try runTool("openssl", ["genpkey", "-algorithm", "ED25519", "-out", key])
        }
        publicPEM = String(decoding: try runTool("openssl", ["pkey", "-in", key, "-pubout"]), as: UTF8.self)
        let spki = [UInt8](try runTool("openssl", ["pkey", "-in", key, "-pubout", "-outform", "DER"]))
        // SubjectPublicKeyInfo: SEQUENCE { AlgorithmIdentifier, BIT STRING }.
        let outer = derChildren(derChildren(spki[...])[0].content)
        let bits = outer[1].content.dropFirst()
        var jwk: [String: JSONValue] = ["kid": .string(kid), "use": "sig"]
        switch kind {
        case .rsa:
            let parts = derChildren(derChildren(bits)[0].content)
            jwk["kty"] = "RSA"
            jwk["n"] = .string(JOSEBase64.encode(parts[0].content.drop { $0 == 0 }))
            jwk["e"] = .string(JOSEBase64.encode(parts[1].content.drop { $0 == 0 }))
        case .p256, .p384, .p521:
            let size = (bits.count - 1) / 2
            jwk["kty"] = "EC"
            jwk["crv"] = .string(["p256": "P-256", "p384": "P-384", "p521": "P-521"][kind.rawValue]!)
            jwk["x"] = .string(JOSEBase64.encode(bits.dropFirst().prefix(size)))
            jwk["y"] = .string(JOSEBase64.encode(bits.suffix(size)))
        case .ed25519:
            jwk["kty"] = "OKP"
            jwk["crv"] = "Ed25519"
            jwk["x"] = .string(JOSEBase64.encode(bits))
        }
        self.jwk = jwk
    }

    /// A compact JWS of `claims` with header `alg` (and `kid` unless `withKID` is false). For
    /// HS256 the "secret" is this key's public PEM: the key-confusion attack.
    func sign(_ alg: String, _ claims: [String: JSONValue], withKID: Bool = true, kid: String? = nil) throws -> String {
        var header: [String: JSONValue] = ["alg": .string(alg), "typ": "JWT"]
        if withKID { header["kid"] = .string(kid ?? self.kid) }
        let input =
            JOSEBase64.encode(JSONValue.object(header).serialized()) + "."
            + JOSEBase64.encode(JSONValue.object(claims).serialized())
        let inputPath = directory.path + "/input"
        try input.write(toFile: inputPath, atomically: true, encoding: .utf8)
        let digest = "-sha" + (alg.hasSuffix("384") ? "384" : alg.hasSuffix("512") ? "512" : "256")
        var signature: [UInt8]
        switch alg.prefix(2) {
        case "RS":
            signature = [UInt8](try runTool("openssl", ["dgst", digest, "-sign", privatePath, inputPath]))
        case "PS":
            signature = [UInt8](
                try runTool(
                    "openssl",
                    [
                        "dgst", digest, "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest", "-sign",
                        privatePath, inputPath,
                    ]
                )
            )
        case "ES":
            let der = [UInt8](try runTool("openssl", ["dgst", digest, "-sign", privatePath, inputPath]))
            let size = kind == .p256 ? 32 : kind == .p384 ? 48 : kind == .p521 ? 66 : 32
            let parts = derChildren(derChildren(der[...])[0].content)
            func fixed(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
                let trimmed = Array(bytes.drop { $0 == 0 })
                return [UInt8](repeating: 0, count: max(0, size - trimmed.count)) + trimmed
            }
            signature = fixed(parts[0].content) + fixed(parts[1].content)
        case "Ed":
            signature = [UInt8](
                try runTool("openssl", ["pkeyutl", "-sign", "-rawin", "-inkey", privatePath, "-in", inputPath])
            )
        case "HS":
            let hex = publicPEM.utf8.map { String(format: "%02x", $0) }.joined()
            signature = [UInt8](
                try runTool(
                    "openssl",
                    ["dgst", digest, "-mac", "HMAC", "-macopt", "hexkey:\(hex)", "-binary", inputPath]
                )
            )
        default:
            signature = []
        }
        return input + "." + JOSEBase64.encode(signature)
    }
}

/// The elements of DER content, one level deep (test use only: well-formed input, short lengths).
func derChildren(_ bytes: ArraySlice<UInt8>) -> [(tag: UInt8, content: ArraySlice<UInt8>)] {
    var out: [(UInt8, ArraySlice<UInt8>)] = []
    var i = bytes.startIndex
    while i < bytes.endIndex {
        let tag = bytes[i]
        var length = Int(bytes[i + 1])
        i += 2
        if length & 0x80 != 0 {
            let count = length & 0x7F
            length = 0
            for _ in 0..<count {
                length = length << 8 | Int(bytes[i])
                i += 1
            }
        }
        out.append((tag, bytes[i..<i + length]))
        i += length
    }
    return out
}
