// The HSM quick start of docs/hsm.md: a Coffer sealed by a key in a PKCS#11 token (SoftHSM here).
//
//   coffer-hsm-quickstart SEAL.json DB init    create the vault (prints recovery keys), write a secret
//   coffer-hsm-quickstart SEAL.json DB read    open it (it unseals itself through the HSM), read the secret
//   coffer-hsm-quickstart SEAL.json DB status  seal status and which HSM key wraps what
//   coffer-hsm-quickstart SEAL.json DB rewrap  move everything to the key now configured (after a rotation)
//   coffer-hsm-quickstart SEAL.json DB time N  open + unseal N times; prints the median (a rough figure)
//
// SEAL.json holds the seal stanza with Vault's field names (docs/hsm.md); the PIN is best given in
// COFFER_HSM_PIN. For the demo, the root token is kept in DB.token: a real deployment hands it to
// its operators and revokes it once other auth is set up.
import Coffer
import Foundation

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    exit(1)
}

let arguments = CommandLine.arguments
guard arguments.count >= 4 else {
    fail("usage: coffer-hsm-quickstart SEAL.json DB init|read|status|rewrap|time N")
}
let (configPath, databasePath, command) = (arguments[1], arguments[2], arguments[3])
let tokenPath = databasePath + ".token"

func configuration(autoUnseal: Bool = true) -> VaultConfiguration {
    guard let text = FileManager.default.contents(atPath: configPath) else { fail("cannot read \(configPath)") }
    do {
        let seal = try PKCS11Seal(PKCS11Configuration(json: try JSONValue.parse(Array(text))))
        return VaultConfiguration(storage: .sqlite(path: databasePath), seal: seal, autoUnseal: autoUnseal)
    } catch {
        fail("\(configPath): \(error)")
    }
}

do {
    switch command {
    case "init":
        let vault = try Vault.open(configuration())
        let result = try vault.initialize(shares: 5, threshold: 3)
        print("Recovery keys (any 3 of 5 authorise rekey and a new root token; they do not unseal):")
        for (i, key) in result.hexKeys.enumerated() { print("  recovery key \(i + 1): \(key)") }
        try result.rootToken.write(toFile: tokenPath, atomically: true, encoding: .utf8)
        print("Root token written to \(tokenPath)")
        _ = try vault.handle(
            Request(
                .update,
                "sys/mounts/secret",
                data: ["type": "kv", "options": ["version": "2"]],
                token: result.rootToken
            )
        )
        let version = try vault.kv(token: result.rootToken).put("app/db", ["password": "s3cret"])
        print("Wrote secret/app/db (version \(version))")
        vault.close()
    case "read":
        let vault: Vault
        do {
            vault = try Vault.open(configuration())
        } catch {
            // Show what a caller sees: the reason, and a vault that stayed sealed.
            let sealed = try Vault.open(configuration(autoUnseal: false))
            let status = try sealed.status()
            sealed.close()
            fail("\(error)\n(the vault is \(status.sealed ? "sealed" : "unsealed"); nothing was changed)")
        }
        let token = try String(contentsOfFile: tokenPath, encoding: .utf8)
        let secret = try vault.kv(token: token).get("app/db")
        print("sealed: \(try vault.status().sealed)  secret/app/db: \(secret?.data ?? [:])")
        vault.close()
    case "status":
        let vault = try Vault.open(configuration())
        print(String(decoding: try vault.status().json.serialized(), as: UTF8.self))
        print(String(decoding: try vault.sealWrapStatus().json.serialized(), as: UTF8.self))
        vault.close()
    case "rewrap":
        let vault = try Vault.open(configuration())
        let status = try vault.rewrapSealedEntries()
        print(String(decoding: status.json.serialized(), as: UTF8.self))
        vault.close()
    case "time":
        let runs = arguments.count > 4 ? Int(arguments[4]) ?? 50 : 50
        var samples: [Double] = []
        for _ in 0..<runs {
            let start = DispatchTime.now().uptimeNanoseconds
            let vault = try Vault.open(configuration())  // new seal: module init, login, unseal
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            guard try !vault.status().sealed else { fail("the vault did not unseal") }
            vault.close()
            samples.append(elapsed)
        }
        samples.sort()
        print(
            String(
                format: "open + auto-unseal over %d runs: median %.2f ms, min %.2f ms, max %.2f ms",
                runs,
                samples[samples.count / 2],
                samples.first!,
                samples.last!
            )
        )
    default:
        fail("unknown command \(command); use init, read, status, rewrap or time")
    }
} catch {
    fail("\(error)")
}
