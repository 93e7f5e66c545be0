import Coffer
import CofferCore
import Foundation
import Synchronization
import Testing

/// The PKI engine through the wire form, every certificate and CRL checked by the `openssl` CLI
/// (at the harness clock's time: `-attime`). The end-to-end flow with the bao CLI, a TLS handshake
/// and the comparison with a live OpenBao are in Tests/compat/test_pki.py.
extension Harness {
    /// `pki/` with an EC P-256 root ("Coffer Test Root", 10 years) and a role `web` for
    /// `*.example.internal`.
    func mountPKI(path: String = "pki", role: [String: JSONValue] = [:]) throws -> String {
        #expect(
            wire("POST", "sys/mounts/\(path)", ["type": "pki", "config": ["max_lease_ttl": "87600h"]]).status == 204
        )
        let root = wire(
            "POST",
            "\(path)/root/generate/internal",
            ["common_name": "Coffer Test Root", "ttl": "87600h", "key_type": "ec"]
        )
        guard root.status == 200, let pem = root.json?["data"]?["certificate"]?.stringValue else {
            throw TestFailure("root/generate answered \(root.status): \(String(describing: root.json))")
        }
        var fields: [String: JSONValue] = [
            "allowed_domains": ["example.internal"], "allow_subdomains": true, "key_type": "ec", "max_ttl": "720h",
        ]
        for (k, v) in role { fields[k] = v }
        #expect(wire("POST", "\(path)/roles/web", .object(fields)).status == 200)
        return pem
    }

    /// A non-JSON answer (a DER CRL, PEM text) with its content type.
    func raw(_ method: String, _ path: String, token: String? = nil) -> WireResult {
        Wire.handle(vault.core, method: method, path: path, token: token, body: [])
    }

    func issue(
        _ role: String = "web",
        _ cn: String,
        path: String = "pki",
        extra: [String: JSONValue] = [:]
    ) throws
        -> [String: JSONValue]
    {
        var body: [String: JSONValue] = ["common_name": .string(cn)]
        for (k, v) in extra { body[k] = v }
        let r = wire("POST", "\(path)/issue/\(role)", .object(body))
        guard r.status == 200, let data = r.json?["data"]?.objectValue else {
            throw TestFailure("issue answered \(r.status): \(String(describing: r.json))")
        }
        return data
    }
}

/// `openssl` with files written to a temporary directory.
struct OpenSSL {
    let dir = TemporaryDirectory()

    func write(_ name: String, _ text: String) -> String {
        let path = dir.file(name)
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    func write(_ name: String, bytes: [UInt8]) -> String {
        let path = dir.file(name)
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    @discardableResult
    func run(_ arguments: [String], stdin: String? = nil) throws -> ProgramResult {
        try runProgram("/usr/bin/openssl", arguments, stdin: stdin)
    }
}

private func text(_ data: [String: JSONValue], _ key: String) -> String { data[key]?.stringValue ?? "" }

@Suite struct PKITests {
    @Test func aLeafUnderAnIntermediateVerifiesAndCarriesOpenBaosExtensions() throws {
        let h = try Harness()
        let rootPEM = try h.mountPKI()
        // The intermediate on its own mount: its key and request, signed by the root, imported back.
        #expect(
            h.wire("POST", "sys/mounts/pki_int", ["type": "pki", "config": ["max_lease_ttl": "43800h"]]).status == 204
        )
        let csr = try #require(
            h.wire(
                "POST",
                "pki_int/intermediate/generate/internal",
                ["common_name": "Coffer Intermediate", "key_type": "ec", "key_bits": 384]
            )
            .json?["data"]?["csr"]?.stringValue
        )
        let signed = h.wire("POST", "pki/root/sign-intermediate", ["csr": .string(csr), "ttl": "43800h"])
        #expect(signed.status == 200)
        let intPEM = try #require(signed.json?["data"]?["certificate"]?.stringValue)
        #expect(signed.json?["data"]?["ca_chain"]?.arrayValue?.count == 2)
        let imported = h.wire("POST", "pki_int/intermediate/set-signed", ["certificate": .string(intPEM)])
        #expect(imported.json?["data"]?["imported_issuers"]?.arrayValue?.count == 1)
        // Importing it again changes nothing.
        let again = h.wire("POST", "pki_int/intermediate/set-signed", ["certificate": .string(intPEM)])
        #expect(
            again.json?["data"]?["imported_issuers"] == .null
                && again.json?["data"]?["existing_issuers"]?.arrayValue?.count == 1
        )
        #expect(
            h.wire(
                "POST",
                "pki_int/roles/web",
                ["allowed_domains": "example.internal", "allow_subdomains": true, "key_type": "ec"]
            ).status
                == 200
        )
        let leaf = try h.issue(
            "web",
            "api.example.internal",
            path: "pki_int",
            extra: ["alt_names": "db.example.internal", "ip_sans": "127.0.0.1"]
        )
        #expect(text(leaf, "private_key").hasPrefix("-----BEGIN EC PRIVATE KEY-----"))
        #expect(text(leaf, "private_key_type") == "ec")
        #expect(leaf["ca_chain"]?.arrayValue?.count == 1)  // the root is not on pki_int, as in OpenBao
        let serial = text(leaf, "serial_number")
        #expect(serial.split(separator: ":").count == 20)

        let ssl = OpenSSL()
        let at = String(h.clock.now().seconds)
        let verify = try ssl.run([
            "verify", "-attime", at, "-CAfile", ssl.write("root.pem", rootPEM), "-untrusted",
            ssl.write("int.pem", intPEM),
            ssl.write("leaf.pem", text(leaf, "certificate")),
        ])
        #expect(verify.status == 0 && verify.output.contains("OK"), "\(verify.output) \(verify.errors)")
        let dump = try ssl.run(["x509", "-in", ssl.dir.file("leaf.pem"), "-noout", "-text"]).output
        #expect(
            dump.contains(
                "X509v3 Key Usage: critical\n                Digital Signature, Key Encipherment, Key Agreement"
            )
        )
        #expect(dump.contains("TLS Web Server Authentication, TLS Web Client Authentication"))
        #expect(dump.contains("DNS:api.example.internal, DNS:db.example.internal, IP Address:127.0.0.1"))
        #expect(!dump.contains("Basic Constraints"))
        #expect(dump.contains("Signature Algorithm: ecdsa-with-SHA384"))  // a P-384 issuer signs with SHA-384
        // NotBefore 30 s back, NotAfter at the mount's default TTL (768 h).
        let dates = try ssl.run([
            "x509", "-in", ssl.dir.file("leaf.pem"), "-noout", "-startdate", "-enddate", "-dateopt", "iso_8601",
        ]).output
        #expect(
            dates.contains(iso(h.clock.now().seconds - 30)) && dates.contains(iso(h.clock.now().seconds + 768 * 3600)),
            "\(dates)"
        )
        // The key matches the certificate.
        let keyPub = try ssl.run(["pkey", "-in", ssl.write("leaf.key", text(leaf, "private_key")), "-pubout"]).output
        let certPub = try ssl.run(["x509", "-in", ssl.dir.file("leaf.pem"), "-noout", "-pubkey"]).output
        #expect(!keyPub.isEmpty && keyPub == certPub)
    }

    /// Validity before 2050 is a UTCTime and from 2050 on a GeneralizedTime (RFC 5280 4.1.2.5): openssl
    /// reads both back to the second.
    @Test func validityOnEitherSideOf2050ReadsBackExactly() throws {
        let h = try Harness()
        #expect(
            h.wire("POST", "sys/mounts/far", ["type": "pki", "config": ["max_lease_ttl": "400000h"]]).status == 204
        )
        let ssl = OpenSSL()
        for hours in [24, 300_000] {
            let root = h.wire(
                "POST",
                "far/root/generate/internal",
                ["common_name": .string("Far Root \(hours)"), "ttl": .string("\(hours)h"), "key_type": "ec"]
            )
            let dates = try ssl.run([
                "x509", "-in",
                ssl.write("far\(hours).pem", text(root.json?["data"]?.objectValue ?? [:], "certificate")), "-noout",
                "-startdate",
                "-enddate", "-dateopt", "iso_8601",
            ]).output
            let notAfter = h.clock.now().seconds + Int64(hours) * 3600
            #expect(dates.contains("notAfter=\(iso(notAfter))"), "\(dates)")
            #expect(hours < 300_000 || iso(notAfter) > "2050", "the second root must end after 2049")
            _ = h.wire("DELETE", "far/root")
        }
    }

    /// EC keys come from key-generation contexts kept for reuse, and the issuer signs with kept signing
    /// contexts (PKeyContext), one thread at a time each: leaves issued from two threads at once all have
    /// keys of their own, each matching its certificate, and verify against the root.
    @Test func leavesIssuedFromTwoThreadsAtOnceHaveKeysOfTheirOwn() throws {
        let h = try Harness()
        let rootPEM = try h.mountPKI()
        let perThread = 20
        let leaves = Mutex<[[String: JSONValue]]>([])
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { thread in
            for i in 0..<perThread {
                do {
                    let leaf = try h.issue("web", "t\(thread)-\(i).example.internal")
                    leaves.withLock { $0.append(leaf) }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
        }
        #expect(failures.withLock { $0 } == [])
        let all = leaves.withLock { $0 }
        #expect(all.count == 2 * perThread)
        #expect(Set(all.map { text($0, "private_key") }).count == all.count)
        #expect(Set(all.map { text($0, "serial_number") }).count == all.count)
        let ssl = OpenSSL()
        _ = ssl.write("root.pem", rootPEM)
        for (n, leaf) in all.enumerated() where n % 10 == 9 {
            let keyPub = try ssl.run(["pkey", "-in", ssl.write("\(n).key", text(leaf, "private_key")), "-pubout"])
            let certPub = try ssl.run([
                "x509", "-in", ssl.write("\(n).pem", text(leaf, "certificate")), "-noout", "-pubkey",
            ])
            #expect(!keyPub.output.isEmpty && keyPub.output == certPub.output)
            let verify = try ssl.run([
                "verify", "-attime", String(h.clock.now().seconds), "-CAfile", ssl.dir.file("root.pem"),
                ssl.dir.file("\(n).pem"),
            ])
            #expect(verify.status == 0, "\(verify.output) \(verify.errors)")
        }
    }

    @Test func keyTypesAndFormats() throws {
        let h = try Harness()
        let rootPEM = try h.mountPKI()
        let ssl = OpenSSL()
        let root = ssl.write("root.pem", rootPEM)
        for (type, bits, label) in [
            ("rsa", 2048, "RSA PRIVATE KEY"), ("ed25519", 0, "PRIVATE KEY"), ("ec", 521, "EC PRIVATE KEY"),
        ] {
            #expect(
                h.wire(
                    "POST",
                    "pki/roles/\(type)",
                    ["allow_any_name": true, "key_type": .string(type), "key_bits": .int(bits)]
                ).status == 200
            )
            let leaf = try h.issue(type, "\(type).example.internal")
            #expect(text(leaf, "private_key").hasPrefix("-----BEGIN \(label)-----"))
            // The key is the certificate's.
            let keyPub = try ssl.run(["pkey", "-in", ssl.write("\(type).key", text(leaf, "private_key")), "-pubout"])
                .output
            let certPub = try ssl.run([
                "x509", "-in", ssl.write("\(type)-cert.pem", text(leaf, "certificate")), "-noout", "-pubkey",
            ]).output
            #expect(!keyPub.isEmpty && keyPub == certPub, "\(type)")
            let verify = try ssl.run([
                "verify", "-attime", String(h.clock.now().seconds), "-CAfile", root,
                ssl.write("\(type).pem", text(leaf, "certificate")),
            ])
            #expect(verify.status == 0, "\(type): \(verify.output) \(verify.errors)")
        }
        let pkcs8 = try h.issue("ec", "x.example.internal", extra: ["private_key_format": "pkcs8"])
        #expect(text(pkcs8, "private_key").hasPrefix("-----BEGIN PRIVATE KEY-----"))
        #expect(try ssl.run(["pkey", "-in", ssl.write("p8.key", text(pkcs8, "private_key")), "-noout"]).status == 0)
        let der = try h.issue("ec", "y.example.internal", extra: ["format": "der"])
        let certDER = try #require(Base64.decode(text(der, "certificate")))
        #expect(
            try ssl.run(["x509", "-inform", "DER", "-in", ssl.write("y.der", bytes: certDER), "-noout", "-subject"])
                .output.contains("y.example.internal")
        )
        let exported = h.wire(
            "POST",
            "pki/root/generate/exported",
            ["common_name": "Second Root", "key_type": "ed25519", "issuer_name": "second"]
        )
        #expect(exported.json?["data"]?["private_key"]?.stringValue?.hasPrefix("-----BEGIN PRIVATE KEY-----") == true)
        // A second root is a second issuer; the default does not move.
        let issuers = h.wire("LIST", "pki/issuers").json?["data"]?["key_info"]?.objectValue ?? [:]
        #expect(issuers.count == 2)
        #expect(issuers.values.filter { $0["is_default"] == true }.count == 1)
        #expect(issuers.values.first { $0["issuer_name"] == "second" }?["is_default"] == false)
    }

    @Test func signingRequestsKeepTheirKeyAndOnlyWhatTheRoleAllows() throws {
        let h = try Harness()
        let rootPEM = try h.mountPKI()
        let ssl = OpenSSL()
        let key = ssl.dir.file("csr.key")
        try ssl.run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key])
        let csrPath = ssl.dir.file("req.csr")
        try ssl.run([
            "req", "-new", "-key", key, "-subj", "/O=Acme/CN=svc.example.internal", "-addext",
            "subjectAltName=DNS:alt.example.internal", "-out", csrPath,
        ])
        let csr = try String(contentsOfFile: csrPath, encoding: .utf8)
        let signed = h.wire("POST", "pki/sign/web", ["csr": .string(csr), "common_name": "ignored.example.internal"])
        #expect(signed.status == 200)
        #expect(signed.json?["warnings"]?.arrayValue?.first?.stringValue?.contains("use_csr_common_name") == true)
        #expect(signed.json?["data"]?["private_key"] == nil)
        let cert = ssl.write("signed.pem", signed.json?["data"]?["certificate"]?.stringValue ?? "")
        let dump = try ssl.run(["x509", "-in", cert, "-noout", "-text"]).output
        #expect(dump.contains("Subject: CN = svc.example.internal"))  // O=Acme dropped
        #expect(dump.contains("DNS:alt.example.internal, DNS:svc.example.internal"))
        let csrPub = try ssl.run(["pkey", "-in", key, "-pubout"]).output
        #expect(try ssl.run(["x509", "-in", cert, "-noout", "-pubkey"]).output == csrPub)
        #expect(
            try ssl.run([
                "verify", "-attime", String(h.clock.now().seconds), "-CAfile", ssl.write("root.pem", rootPEM), cert,
            ]).status == 0
        )

        // sign-verbatim keeps the whole subject and no EKU.
        let verbatim = h.wire("POST", "pki/sign-verbatim", ["csr": .string(csr)])
        #expect(verbatim.status == 200)
        let vdump = try ssl.run([
            "x509", "-in", ssl.write("v.pem", verbatim.json?["data"]?["certificate"]?.stringValue ?? ""), "-noout",
            "-text",
        ]).output
        #expect(vdump.contains("Subject: O = Acme, CN = svc.example.internal"))
        #expect(!vdump.contains("Extended Key Usage"))

        // A request whose signature does not verify: flip a byte of the signature.
        var der = try #require(PEMBlocks.first(csr))
        der[der.count - 3] ^= 0x01
        let bad = h.wire("POST", "pki/sign/web", ["csr": .string(PEMBlocks.encode(der, "CERTIFICATE REQUEST"))])
        #expect(bad.status == 400 && errors(bad.json) == ["request signature invalid"])
        #expect(
            h.wire(
                "POST",
                "pki/sign/web",
                ["csr": "-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----"]
            ).status == 400
        )
        // An RSA request on an EC role.
        try ssl.run([
            "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", ssl.dir.file("rsa.key"),
        ])
        try ssl.run([
            "req", "-new", "-key", ssl.dir.file("rsa.key"), "-subj", "/CN=r.example.internal", "-out",
            ssl.dir.file("rsa.csr"),
        ])
        let rsa = h.wire(
            "POST",
            "pki/sign/web",
            ["csr": .string(try String(contentsOfFile: ssl.dir.file("rsa.csr"), encoding: .utf8))]
        )
        #expect(rsa.status == 400 && errors(rsa.json) == ["role requires keys of type ec"])
        let listed = h.wire("LIST", "pki/certs").json?["data"]?["keys"]?.arrayValue?.count
        #expect(listed == 3)  // the root, sign and sign-verbatim: nothing from the refused requests
    }

    @Test func badInputIsRefusedWithOpenBaosErrors() throws {
        let h = try Harness()
        _ = try h.mountPKI()
        func error(_ method: String, _ path: String, _ body: JSONValue) -> (Int, [String]) {
            let r = h.wire(method, path, body)
            return (r.status, errors(r.json))
        }
        #expect(
            error("POST", "pki/issue/web", ["common_name": "www.evil.com"]) == (
                400, ["common name www.evil.com not allowed by this role"]
            )
        )
        #expect(
            error("POST", "pki/issue/web", ["common_name": "example.internal"]) == (
                400, ["common name example.internal not allowed by this role"]
            )
        )
        #expect(
            error("POST", "pki/issue/web", ["common_name": "a.example.internal", "alt_names": "x.evil.com"])
                == (400, ["subject alternate name x.evil.com not allowed by this role"])
        )
        #expect(
            error("POST", "pki/issue/web", ["common_name": "a.example.internal", "ip_sans": "notanip"])
                == (400, ["the value \"notanip\" is not a valid IP address"])
        )
        #expect(error("POST", "pki/issue/nope", ["common_name": "a.example.internal"]) == (400, ["unknown role: nope"]))
        #expect(error("POST", "pki/issue/web", ["common_name": "a.example.internal", "ttl": "abc"]).0 == 400)
        #expect(
            error("POST", "pki/roles/r", ["key_type": "rsa", "key_bits": 1000]) == (
                400, ["RSA keys < 2048 bits are unsafe and not supported: got 1000"]
            )
        )
        #expect(
            error("POST", "pki/roles/e", ["key_type": "ec", "key_bits": 300]) == (
                400, ["unsupported bit length for EC key: 300"]
            )
        )
        // A field Coffer does not act on: refused, not stored.
        #expect(error("POST", "pki/roles/p", ["policy_identifiers": "1.2.3"]).0 == 400)
        #expect(error("POST", "pki/root/generate/bogus", ["common_name": "x"]).0 == 400)
        let (status, messages) = error("GET", "pki/issuer/nope", .null)
        #expect(
            status == 500 && messages == ["1 error occurred:\n\t* unable to find PKI issuer for reference: nope\n\n"]
        )
        #expect(error("POST", "pki/issuer/nope/issue/web", ["common_name": "a.example.internal"]).0 == 500)
        #expect(error("POST", "pki/intermediate/set-signed", ["certificate": "not a pem"]).0 == 400)
        // A leaf certificate is not a CA: refused, and its PEM is echoed as OpenBao does.
        let leaf = try h.issue("web", "a.example.internal")
        let (code, text) = error("POST", "pki/intermediate/set-signed", ["certificate": leaf["certificate"]!])
        #expect(
            code == 400
                && text.first?.hasPrefix(
                    "Error parsing issuer 0: Refusing to import non-CA certificate\n-----BEGIN CERTIFICATE-----"
                ) == true
        )
        // A TTL past the role's max is capped with OpenBao's warning; past the CA's NotAfter it is refused,
        // or clipped once the issuer says `truncate`.
        let capped = h.wire("POST", "pki/issue/web", ["common_name": "b.example.internal", "ttl": "9999h"])
        #expect(
            capped.json?["warnings"]?.arrayValue?.first
                == "TTL \"9999h0m0s\" is longer than permitted maxTTL \"720h0m0s\", so maxTTL is being used"
        )
        #expect(
            h.wire("POST", "pki/roles/long", ["allow_any_name": true, "key_type": "ec", "max_ttl": "200000h"]).status
                == 200
        )
        #expect(h.wire("POST", "sys/mounts/pki/tune", ["max_lease_ttl": "200000h"]).status == 204)
        let past = h.wire("POST", "pki/issue/long", ["common_name": "c.example.internal", "ttl": "100000h"])
        #expect(
            past.status == 400
                && errors(past.json).first?.hasPrefix("cannot satisfy request, as TTL would result in notAfter of")
                    == true
        )
        #expect(h.wire("POST", "pki/issuer/default", ["leaf_not_after_behavior": "truncate"]).status == 200)
        let clipped = h.wire("POST", "pki/issue/long", ["common_name": "c.example.internal", "ttl": "100000h"])
        let rootExpiry = h.wire("GET", "pki/cert/ca").json?["data"]?["certificate"]?.stringValue
        #expect(clipped.status == 200 && rootExpiry != nil)
        let caNotAfter = h.clock.now().seconds + 87600 * 3600
        #expect(clipped.json?["data"]?["expiration"] == .int(caNotAfter))
        // No issuer at all: OpenBao's 500 on issue and a 204 for the CA and CRL downloads.
        #expect(h.wire("POST", "sys/mounts/empty", ["type": "pki"]).status == 204)
        #expect(h.wire("POST", "empty/roles/r", ["allow_any_name": true]).status == 200)
        #expect(error("POST", "empty/issue/r", ["common_name": "x"]).0 == 500)
        #expect(h.raw("GET", "empty/crl").status == 204 && h.raw("GET", "empty/ca/pem").status == 204)
    }

    @Test func revocationReachesTheCRLAndTheCRLDropsExpiredCertificates() throws {
        let h = try Harness()
        let rootPEM = try h.mountPKI(role: ["ttl": "1h"])
        let ssl = OpenSSL()
        let root = ssl.write("root.pem", rootPEM)
        let leaf = try h.issue("web", "a.example.internal")
        let serial = text(leaf, "serial_number")
        let short = try h.issue("web", "b.example.internal", extra: ["ttl": "60s"])
        let unrevoked = try h.issue("web", "c.example.internal", extra: ["ttl": "60s"])
        // Unauthenticated lookups, before and after.
        let before = h.wire(
            "GET",
            "pki/cert/\(serial.replacingOccurrences(of: ":", with: "-").uppercased())",
            token: nil
        )
        #expect(before.status == 200 && before.json?["data"]?["revocation_time"] == 0)
        let revoked = h.wire("POST", "pki/revoke", ["serial_number": .string(serial)])
        #expect(revoked.status == 200 && revoked.json?["data"]?["state"] == "revoked")
        #expect(revoked.json?["data"]?["revocation_time"] == .int(h.clock.now().seconds))
        h.clock.advance(seconds: 5)
        // Idempotent: the first revocation's time.
        #expect(
            h.wire("POST", "pki/revoke", ["serial_number": .string(serial)]).json?["data"]?["revocation_time"]
                == revoked.json?["data"]?["revocation_time"]
        )
        #expect(h.wire("POST", "pki/revoke", ["serial_number": short["serial_number"]!]).status == 200)
        let after = h.wire("GET", "pki/cert/\(serial)", token: nil).json?["data"]
        #expect(after?["revocation_time"] == revoked.json?["data"]?["revocation_time"] && after?["issuer_id"] != nil)
        #expect(h.wire("LIST", "pki/certs/revoked").json?["data"]?["keys"]?.arrayValue?.count == 2)

        let crl = h.raw("GET", "pki/crl")
        #expect(crl.status == 200 && crl.contentType == "application/pkix-crl")
        let crlPath = ssl.write("crl.der", bytes: crl.body ?? [])
        let crlText = try ssl.run([
            "crl", "-inform", "DER", "-in", crlPath, "-CAfile", root, "-noout", "-text", "-verify",
        ])
        #expect(crlText.errors.contains("verify OK"), "\(crlText.errors)")
        #expect(crlText.output.contains(serial.replacingOccurrences(of: ":", with: "").uppercased()))
        #expect(crlText.output.contains("Version 2") && crlText.output.contains("X509v3 CRL Number"))
        // The revoked leaf fails verification with the CRL; the chain and CRL in one file.
        let pem = h.raw("GET", "pki/crl/pem")
        #expect(pem.contentType == "application/x-pem-file")
        let bundle = ssl.write("bundle.pem", rootPEM + "\n" + String(decoding: pem.body ?? [], as: UTF8.self))
        let check = try ssl.run([
            "verify", "-attime", String(h.clock.now().seconds), "-crl_check", "-CAfile", bundle,
            ssl.write("leaf.pem", text(leaf, "certificate")),
        ])
        #expect(
            check.status != 0 && (check.output + check.errors).contains("certificate revoked"),
            "\(check.output) \(check.errors)"
        )

        // Once the 60 s certificate has expired, the next CRL no longer lists it; a newer CRL has a higher number.
        func crlNumber(_ der: [UInt8]) throws -> Int {
            let out = try ssl.run([
                "crl", "-inform", "DER", "-in", ssl.write("n.der", bytes: der), "-noout", "-crlnumber",
            ]).output
            let hex =
                out.split(separator: "=").last.map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
            return Int(hex.hasPrefix("0x") ? String(hex.dropFirst(2)) : hex, radix: 16) ?? -1
        }
        let firstNumber = try crlNumber(crl.body ?? [])
        h.clock.advance(seconds: 120)
        let later = h.raw("GET", "pki/crl")
        let laterText = try ssl.run([
            "crl", "-inform", "DER", "-in", ssl.write("later.der", bytes: later.body ?? []), "-noout", "-text",
        ]).output
        #expect(laterText.components(separatedBy: "Serial Number:").count == 2)  // only the leaf
        #expect(try crlNumber(later.body ?? []) > firstNumber)
        // An expired certificate is not added: OpenBao's 200 with no data and a warning.
        let expired = h.wire("POST", "pki/revoke", ["serial_number": unrevoked["serial_number"]!])
        #expect(expired.status == 200 && expired.json?["data"] == .null)
        #expect(
            expired.json?["warnings"]?.arrayValue?.first?.stringValue?.hasSuffix(
                "already expired; refusing to add to CRL. Enable 'AllowExpiredCertRevocation' to allow revoking expired certificates."
            ) == true
        )
        // The issuer cannot revoke itself; an unknown serial is refused.
        let rootSerial = try #require(
            h.wire("LIST", "pki/issuers").json?["data"]?["key_info"]?.objectValue?.values.first?["serial_number"]?
                .stringValue
        )
        #expect(
            errors(h.wire("POST", "pki/revoke", ["serial_number": .string(rootSerial)]).json).first?.hasPrefix(
                "adding issuer (id: "
            ) == true
        )
        #expect(
            errors(h.wire("POST", "pki/revoke", ["serial_number": "11:22:33"]).json) == [
                "certificate with serial 11:22:33 not found."
            ]
        )
    }

    @Test func noStoreCertificatesAreRevocableBySerialAndByCertificate() throws {
        let h = try Harness()
        _ = try h.mountPKI(role: ["no_store": true])
        let a = try h.issue("web", "a.example.internal")
        let b = try h.issue("web", "b.example.internal")
        #expect(h.wire("GET", "pki/cert/\(text(a, "serial_number"))").status == 404)
        // By serial alone: the serial carries its issuer and expiry under the mount's MAC.
        #expect(
            h.wire("POST", "pki/revoke", ["serial_number": a["serial_number"]!]).json?["data"]?["state"] == "revoked"
        )
        #expect(h.wire("POST", "pki/revoke", ["certificate": b["certificate"]!]).json?["data"]?["state"] == "revoked")
        // A 20-byte serial this mount did not make (one bit changed) is not ours to list.
        var forged = text(a, "serial_number")
        forged = String(forged.dropLast()) + (forged.last == "0" ? "1" : "0")
        #expect(h.wire("POST", "pki/revoke", ["serial_number": .string(forged)]).status == 400)
        let ssl = OpenSSL()
        // A certificate naming this CA as its issuer, without an authority key identifier, but
        // signed by another key is refused: the signature is what is checked, not the name.
        let fakeKey = ssl.dir.file("fake.key")
        try ssl.run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", fakeKey])
        try ssl.run([
            "req", "-x509", "-new", "-key", fakeKey, "-subj", "/CN=Coffer Test Root", "-days", "3650", "-out",
            ssl.dir.file("fake-ca.pem"),
        ])
        try ssl.run([
            "req", "-new", "-key", fakeKey, "-subj", "/CN=forged.example.internal", "-out", ssl.dir.file("forged.csr"),
        ])
        try ssl.run([
            "x509", "-req", "-in", ssl.dir.file("forged.csr"), "-CA", ssl.dir.file("fake-ca.pem"), "-CAkey", fakeKey,
            "-set_serial", "0x1234", "-days", "1", "-extfile",
            ssl.write("ext.cnf", "authorityKeyIdentifier = none\nsubjectKeyIdentifier = none\n"), "-out",
            ssl.dir.file("forged.pem"),
        ])
        let forgedPEM = try String(contentsOfFile: ssl.dir.file("forged.pem"), encoding: .utf8)
        #expect(h.wire("POST", "pki/revoke", ["certificate": .string(forgedPEM)]).status == 500)
        #expect(h.wire("GET", "pki/cert/12:34").status == 404)
        let crl = h.raw("GET", "pki/crl").body ?? []
        let listing = try ssl.run(["crl", "-inform", "DER", "-in", ssl.write("crl.der", bytes: crl), "-noout", "-text"])
            .output
        for serial in [text(a, "serial_number"), text(b, "serial_number")] {
            #expect(listing.contains(serial.replacingOccurrences(of: ":", with: "").uppercased()))
        }
    }

    @Test func leasedCertificatesAreRevokedWithTheirLease() throws {
        let h = try Harness()
        _ = try h.mountPKI(role: ["generate_lease": true, "ttl": "1h"])
        let r = h.wire("POST", "pki/issue/web", ["common_name": "a.example.internal"])
        let lease = try #require(r.json?["lease_id"]?.stringValue)
        #expect(lease.hasPrefix("pki/issue/web/") && r.json?["renewable"] == false && r.json?["lease_duration"] == 3600)
        #expect(h.wire("POST", "sys/leases/renew", ["lease_id": .string(lease)]).status == 400)
        let serial = try #require(r.json?["data"]?["serial_number"]?.stringValue)
        // Expiry revokes the lease, and revoking the lease revokes the certificate... which has just
        // expired too, so it is not added to the CRL; an explicit revoke before expiry is.
        let second = h.wire("POST", "pki/issue/web", ["common_name": "b.example.internal"])
        let secondLease = try #require(second.json?["lease_id"]?.stringValue)
        #expect(h.wire("POST", "sys/leases/revoke", ["lease_id": .string(secondLease)]).status == 204)
        let secondSerial = try #require(second.json?["data"]?["serial_number"]?.stringValue)
        #expect(h.wire("GET", "pki/cert/\(secondSerial)").json?["data"]?["revocation_time"] != 0)
        h.clock.advance(seconds: 3601)
        #expect(h.expire().revoked == 1)
        #expect(h.wire("GET", "pki/cert/\(serial)").json?["data"]?["revocation_time"] == 0)
    }

    @Test func issuersKeysAndConfiguration() throws {
        let h = try Harness()
        _ = try h.mountPKI()
        let urls = h.wire(
            "POST",
            "pki/config/urls",
            [
                "issuing_certificates": ["http://127.0.0.1:8200/v1/pki/ca"],
                "crl_distribution_points": "http://127.0.0.1:8200/v1/pki/crl",
            ]
        )
        #expect(
            urls.status == 200 && urls.json?["data"]?["crl_distribution_points"] == ["http://127.0.0.1:8200/v1/pki/crl"]
        )
        let ssl = OpenSSL()
        let leaf = try h.issue("web", "a.example.internal")
        let dump = try ssl.run(["x509", "-in", ssl.write("a.pem", text(leaf, "certificate")), "-noout", "-text"]).output
        #expect(dump.contains("CA Issuers - URI:http://127.0.0.1:8200/v1/pki/ca"))
        #expect(dump.contains("URI:http://127.0.0.1:8200/v1/pki/crl"))
        let issuer = h.wire("GET", "pki/issuer/default").json?["data"]
        #expect(issuer?["usage"] == "crl-signing,issuing-certificates,ocsp-signing,read-only")
        #expect(issuer?["revocation_signature_algorithm"] == "ECDSAWithSHA256")
        #expect(h.wire("GET", "pki/issuer/default", token: nil).status == 403)
        #expect(h.wire("POST", "pki/issuer/default", ["issuer_name": "v2"]).json?["data"]?["issuer_name"] == "v2")
        #expect(h.wire("GET", "pki/issuer/v2/json", token: nil).json?["data"]?["issuer_name"] == "v2")
        #expect(h.raw("GET", "pki/issuer/v2/der").contentType == "application/pkix-cert")
        #expect(h.raw("GET", "pki/ca").contentType == "application/pkix-cert")
        #expect(h.raw("GET", "pki/ca/pem").contentType == "application/pem-certificate-chain")
        let keyID = try #require(issuer?["key_id"]?.stringValue)
        #expect(h.wire("GET", "pki/key/default").json?["data"]?["key_id"] == .string(keyID))
        #expect(h.wire("DELETE", "pki/key/\(keyID)").status == 400)  // an issuer uses it
        #expect(h.wire("GET", "pki/config/crl").json?["data"]?["expiry"] == "72h")
        let deleted = h.wire("DELETE", "pki/issuer/v2")
        #expect(
            deleted.json?["warnings"]?.arrayValue?.first?.stringValue?.contains(
                "this was configured as the default issuer"
            ) == true
        )
        #expect(h.wire("GET", "pki/config/issuers").json?["data"]?["default"] == "")
    }

    @Test func tidyRemovesExpiredCertificatesOnly() throws {
        let h = try Harness()
        _ = try h.mountPKI()
        let old = try h.issue("web", "old.example.internal", extra: ["ttl": "10s"])
        let fresh = try h.issue("web", "new.example.internal", extra: ["ttl": "1h"])
        #expect(h.wire("POST", "pki/revoke", ["serial_number": old["serial_number"]!]).status == 200)
        h.clock.advance(seconds: 60)
        let r = h.wire(
            "POST",
            "pki/tidy",
            ["tidy_cert_store": true, "tidy_revoked_certs": true, "safety_buffer": "1s"]
        )
        #expect(r.status == 202)
        #expect(h.wire("GET", "pki/cert/\(text(old, "serial_number"))").status == 404)
        #expect(h.wire("GET", "pki/cert/\(text(fresh, "serial_number"))").status == 200)
        #expect(h.wire("LIST", "pki/certs/revoked").status == 404)
        let status = h.wire("GET", "pki/tidy-status").json?["data"]
        #expect(status?["state"] == "Finished" && status?["cert_store_deleted_count"] == 1)
        #expect(
            h.wire("POST", "pki/tidy", [:]).json?["warnings"]?.arrayValue?.first?.stringValue?.hasPrefix(
                "Manual tidy requested"
            ) == true
        )
        // The root stays whatever its age.
        #expect(h.wire("LIST", "pki/certs").json?["data"]?["keys"]?.arrayValue?.count == 2)
    }

    @Test func caKeysAreSealWrappedAndEverythingSurvivesARestart() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("coffer.db")
        var h: Harness? = try Harness(storage: .sqlite(path: path))
        _ = try h!.mountPKI(role: ["no_store": true])
        let leaf = try h!.issue("web", "a.example.internal")
        let stored = try h!.issue("web", "b.example.internal")
        #expect(h!.wire("POST", "pki/revoke", ["serial_number": stored["serial_number"]!]).status == 200)
        let core = h!.vault.core
        let uuid = try #require(try core.mounts().first { $0.path == "pki/" }?.uuid)
        let keys = try core.barrier.list("logical/\(uuid)/key/")
        #expect(keys.count == 1)
        #expect(PKIBackend().specialPaths.sealWrapStorage == ["key/*", "config/serial-key"])
        let key = h!.unsealKey
        h!.vault.close()
        h = nil

        let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: path)))
        defer { vault.close() }
        try vault.unseal(key: key)
        func wire(_ method: String, _ path: String, _ body: JSONValue? = nil) -> (Int, JSONValue?) {
            let (status, bytes) = vault.core.handleWire(
                method: method,
                path: path,
                token: "root",
                body: body?.serialized() ?? []
            )
            return (status, bytes.map { try? JSONValue.parse($0) } ?? nil)
        }
        // The serial key survived: a no_store certificate from before the restart is still revocable by serial.
        #expect(wire("POST", "pki/revoke", ["serial_number": leaf["serial_number"]!]).1?["data"]?["state"] == "revoked")
        let crl = Wire.handle(vault.core, method: "GET", path: "pki/crl", token: nil, body: []).body ?? []
        let ssl = OpenSSL()
        let listing = try ssl.run(["crl", "-inform", "DER", "-in", ssl.write("crl.der", bytes: crl), "-noout", "-text"])
            .output
        #expect(listing.components(separatedBy: "Serial Number:").count == 3)
        #expect(wire("POST", "pki/issue/web", ["common_name": "c.example.internal"]).0 == 200)
    }
}

private func iso(_ seconds: Int64) -> String {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
    return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
}

/// PEM in tests (the engine's own PEM type is internal).
enum PEMBlocks {
    static func first(_ text: String) -> [UInt8]? {
        let body = text.components(separatedBy: "\n").filter { !$0.hasPrefix("-----") }.joined()
        return Data(base64Encoded: body).map { Array($0) }
    }

    static func encode(_ der: [UInt8], _ label: String) -> String {
        "-----BEGIN \(label)-----\n"
            + Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
            + "\n-----END \(label)-----\n"
    }
}
