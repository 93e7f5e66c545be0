import Coffer
import Foundation
import Testing

/// Request values that used to trap the process or leak into error texts, through the same wire
/// form HTTP and `coffer_request` use.
@Suite struct HardeningTests {
    static let huge: [JSONValue] = [
        10_000_000_000, "99999999999999999999h", "1e300s", .number("1e300"), "9223372036854775807", -1,
    ]

    @Test func outOfRangeDurationsAreRefusedNamingTheFieldAndLimit() throws {
        let h = try Harness()
        #expect(h.wire("POST", "sys/mounts/transit", ["type": "transit"]).status == 204)
        for value in Self.huge {
            for (method, path, field) in [
                ("PUT", "secret/metadata/x", "delete_version_after"), ("POST", "secret/config", "delete_version_after"),
                ("POST", "auth/token/create", "period"), ("POST", "auth/token/create", "explicit_max_ttl"),
                ("POST", "auth/token/create", "ttl"), ("POST", "transit/keys/k", "auto_rotate_period"),
            ] {
                let r = h.wire(method, path, .object([field: value]))
                #expect(r.status == 400, "\(path) \(field)=\(value.jsonString) answered \(r.status)")
                let message = errors(r.json).joined()
                #expect(message.contains(field), "\(message)")
                #expect(message.contains("3153600000"), "\(message)")
            }
        }
        // Nothing was stored: writes and token use go on as before.
        #expect(h.wire("PUT", "secret/data/x", ["data": ["a": "b"]]).status == 200)
        #expect(h.wire("GET", "secret/metadata/x").json?["data"]?["delete_version_after"] == "0s")
        #expect(h.wire("POST", "auth/token/create", ["ttl": "1h"]).status == 200)
    }

    @Test func metadataPoisonedByAnOlderVersionOpensAndCanBeFixed() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("coffer.db")
        var h: Harness? = try Harness(storage: .sqlite(path: path))
        let key = h!.unsealKey
        #expect(h!.wire("PUT", "secret/data/x", ["data": ["a": "b"]]).status == 200)
        // What an older Coffer could store: a delete_version_after past any representable time.
        let core = h!.vault.core
        let uuid = try #require(try core.mounts().first { $0.path == "secret/" }?.uuid)
        let stored = "logical/\(uuid)/metadata/x"
        let bytes = try #require(try core.barrier.get(stored))
        var metadata = try #require(try JSONValue.parse(bytes).objectValue)
        metadata["delete_version_after"] = 10_000_000_000
        try core.barrier.put(stored, JSONValue.object(metadata).serialized())
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
            return (status, bytes.map { try! JSONValue.parse($0) })
        }
        let write = wire("PUT", "secret/data/x", ["data": ["a": "c"]])
        #expect(write.0 == 200)
        #expect(write.1?["data"]?["version"] == 2)
        #expect(wire("GET", "secret/data/x").1?["data"]?["data"] == ["a": "c"])
        #expect(wire("PUT", "secret/metadata/x", ["delete_version_after": "1h"]).0 == 204)
        #expect(wire("GET", "secret/metadata/x").1?["data"]?["delete_version_after"] == "1h0m0s")
    }

    @Test func listAsHvacSendsIt() throws {
        let h = try Harness()
        #expect(h.wire("PUT", "secret/data/folder/a", ["data": ["k": "v"]]).status == 200)
        for flag in ["True", "true", "1", "t", "T", "TRUE"] {
            let r = h.wire("GET", "secret/metadata/folder/?list=\(flag)")
            #expect(r.status == 200 && r.json?["data"]?["keys"] == ["a"], "list=\(flag): \(r.status)")
        }
        for flag in ["False", "0", "f"] {  // a read of the folder, which is not a secret
            #expect(h.wire("GET", "secret/metadata/folder/?list=\(flag)").json?["data"]?["keys"] == nil, "list=\(flag)")
        }
        let bad = h.wire("GET", "secret/metadata/folder/?list=maybe")
        #expect(bad.status == 400 && !errors(bad.json).joined().contains("maybe"))
    }

    @Test func errorsNeverQuoteTheValueGiven() throws {
        let h = try Harness()
        #expect(h.wire("POST", "sys/mounts/transit", ["type": "transit"]).status == 204)
        #expect(h.wire("POST", "transit/keys/signer", ["type": "rsa-2048"]).status == 200)
        #expect(h.wire("PUT", "secret/data/x", ["data": ["a": "b"]]).status == 200)
        let marker = "MARKER-7f3a9c"
        let requests: [(String, String, JSONValue?)] = [
            ("PUT", "secret/data/x", ["data": ["a": "b"], "options": ["cas": .string(marker)]]),
            ("PUT", "secret/metadata/x", ["max_versions": .string(marker)]),
            ("PUT", "secret/metadata/x", ["delete_version_after": .string(marker)]),
            ("POST", "secret/config", ["max_versions": .string(marker)]),
            ("GET", "secret/data/x?version=\(marker)", nil),
            ("POST", "transit/keys/k2", ["type": .string(marker)]),
            ("POST", "transit/random", ["format": .string(marker)]),
            ("POST", "transit/random", ["source": .string(marker)]),
            ("POST", "transit/random", ["bytes": .string(marker)]),
            ("POST", "transit/hash", ["input": "aGk=", "algorithm": .string(marker)]),
            ("POST", "transit/sign/signer", ["input": "aGk=", "marshaling_algorithm": .string(marker)]),
            ("POST", "transit/sign/signer", ["input": "aGk=", "signature_algorithm": .string(marker)]),
            ("POST", "auth/token/create", ["num_uses": .string(marker)]),
            ("POST", "auth/token/create", ["ttl": .string(marker)]),
        ]
        for (method, path, body) in requests {
            let r = h.wire(method, path, body)
            #expect(r.status == 400, "\(method) \(path) answered \(r.status)")
            let text = r.json?.jsonString ?? ""
            #expect(!text.contains(marker), "\(method) \(path) quoted the value: \(text)")
        }
    }
}
