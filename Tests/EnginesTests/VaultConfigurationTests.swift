import Coffer
import Foundation
import Testing

/// The JSON configuration (what coffer_open and the server read): every key, the defaults, and an
/// error naming the key for anything unknown or mistyped.
@Suite struct VaultConfigurationTests {
    func message(_ json: String) -> String? {
        do {
            _ = try VaultConfiguration(json: json)
            return nil
        } catch {
            #expect(error.code == .invalidArgument)
            return error.message
        }
    }

    @Test func everyKeyIsRead() throws {
        let config = try VaultConfiguration(
            json: #"""
                {"storage": {"type": "sqlite", "path": "/var/lib/app/coffer.db"}, "seal": {"type": "shamir"},
                 "limits": {"max_entry_size": 4096, "read_cache_bytes": 0}}
                """#
        )
        guard case .sqlite(let path) = config.storage else {
            Issue.record("storage is \(config.storage)")
            return
        }
        #expect(path == "/var/lib/app/coffer.db")
        #expect(config.seal.type == "shamir")
        #expect(config.limits.maxEntrySize == 4096)
        #expect(config.limits.readCacheBytes == 0)
        #expect(config.devRootToken == nil)
    }

    @Test func defaults() throws {
        let config = try VaultConfiguration(json: #"{"storage": {"type": "memory"}}"#)
        #expect(config.seal.type == "shamir")
        #expect(config.limits.maxEntrySize == Limits().maxEntrySize)
        #expect(config.limits.readCacheBytes == 32 << 20)
    }

    @Test func unknownKeysAreNamedAtEveryLevel() {
        #expect(message(#"{"storage": {"type": "memory"}, "storrage": {}}"#)?.contains("'storrage'") == true)
        #expect(message(#"{"storage": {"type": "sqlite", "paht": "x"}}"#)?.contains("'storage.paht'") == true)
        #expect(message(#"{"storage": {"type": "memory", "path": "x"}}"#)?.contains("'storage.path'") == true)
        #expect(
            message(#"{"storage": {"type": "memory"}, "seal": {"type": "shamir", "shares": 5}}"#)?.contains(
                "'seal.shares'"
            ) == true
        )
        #expect(
            message(#"{"storage": {"type": "memory"}, "limits": {"max_size": 1}}"#)?.contains("'limits.max_size'")
                == true
        )
        #expect(message(#"{"dev": {"root": "x"}}"#)?.contains("'dev.root'") == true)
    }

    @Test func badValuesSayWhatIsExpected() {
        #expect(message("")?.contains("not valid JSON") == true)
        #expect(message("[]") == "the configuration must be a JSON object, not array")
        #expect(message("{}")?.contains("'storage' is required") == true)
        #expect(message(#"{"storage": "sqlite"}"#) == "configuration key 'storage' must be a JSON object, not string")
        #expect(message(#"{"storage": {"type": "sqlite"}}"#)?.contains("'storage.path' is required") == true)
        #expect(message(#"{"storage": {"type": "etcd"}}"#)?.contains("supported: \"sqlite\", \"memory\"") == true)
        #expect(message(#"{"storage": {"type": "memory"}, "seal": {"type": "hsm"}}"#)?.contains("'seal.type'") == true)
        #expect(message(#"{"storage": {"type": "memory"}, "seal": {"type": "pkcs11"}}"#)?.contains("needs lib") == true)
        #expect(
            message(#"{"storage": {"type": "memory"}, "seal": {"type": "pkcs11", "lib": "/x.so", "pinn": "1"}}"#)?
                .contains("'pinn'") == true
        )
        #expect(
            message(#"{"storage": {"type": "memory"}, "audit": {"type": "file"}}"#)?.contains("must be a list") == true
        )
        #expect(
            message(#"{"storage": {"type": "memory"}, "audit": [{"type": "file"}]}"#)?.contains("needs 'type'") == true
        )
        #expect(
            message(#"{"storage": {"type": "memory"}, "audit": [{"type": "file", "path": "f", "colour": 1}]}"#)?
                .contains("'audit[0].colour'") == true
        )
        #expect(
            message(#"{"storage": {"type": "memory"}, "limits": {"max_entry_size": 1.5}}"#)?.contains(
                "must be an integer"
            ) == true
        )
        #expect(
            message(#"{"storage": {"type": "memory"}, "limits": {"max_entry_size": 0}}"#)?.contains("positive") == true
        )
        #expect(
            message(#"{"storage": {"type": "memory"}, "limits": {"read_cache_bytes": -1}}"#)?.contains(
                "'limits.read_cache_bytes' must be a number of bytes, 0 or more"
            ) == true
        )
        #expect(
            message(#"{"dev": true, "storage": {"type": "sqlite", "path": "x"}}"#)?.contains(
                "dev mode keeps everything in memory"
            ) == true
        )
        #expect(message(#"{"dev": {"root_token": ""}}"#)?.contains("must not be empty") == true)
    }

    @Test func devOpensAnUnsealedVaultWithSecretMounted() throws {
        let vault = try Vault.open(try VaultConfiguration(json: #"{"dev": {"root_token": "dev-root"}}"#))
        defer { vault.close() }
        #expect(try vault.status().sealed == false)
        let kv = vault.kv(token: "dev-root")
        #expect(try kv.put("a", ["k": "v"]) == 1)
        #expect(try kv.get("a")?.data == ["k": "v"])
        #expect(try VaultConfiguration(json: #"{"dev": true}"#).devRootToken == "root")
        #expect(try VaultConfiguration(json: #"{"dev": false, "storage": {"type": "memory"}}"#).devRootToken == nil)
    }

    @Test func declaredAuditDevicesAreEnabledAtUnsealAndMustWork() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "coffer-config-audit-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = dir.appendingPathComponent("audit.log").path
        let config = try VaultConfiguration(
            json: #"{"dev": true, "audit": [{"path": "file", "type": "file", "options": {"file_path": "\#(log)"}}]}"#
        )
        let vault = try Vault.open(config)
        _ = vault.core.handleWire(method: "GET", path: "secret/data/x", token: "root", body: [])
        vault.close()  // writes the read's records, which the device's writer thread may not have yet
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("secret/data/x"))

        let broken = try VaultConfiguration(
            json:
                #"{"dev": true, "audit": [{"path": "file", "type": "file", "options": {"file_path": "/nonexistent-dir/a.log"}}]}"#
        )
        #expect {
            _ = try Vault.open(broken)
        } throws: { error in
            (error as? CofferError)?.message.contains("the configured audit device file/ cannot be enabled") == true
        }
    }
}
