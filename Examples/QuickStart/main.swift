// The embedded quick start: open a SQLite-backed Coffer in a local folder, initialise it, unseal
// it, write and read a KV secret, and print what happened. Run it with `make run`.
import Coffer

#if canImport(Glibc)
import Glibc
#endif

let folder = CommandLine.arguments.dropFirst().first ?? "quickstart-data"
mkdir(folder, 0o700)
let path = folder + "/coffer.db"
let stateFile = folder + "/DEMO-ONLY-unseal-keys.txt"

func say(_ text: String) { print("• " + text) }

do {
    let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: path)))
    say("opened \(path) (storage: sqlite, seal: shamir)")
    var rootToken: String
    let status = try vault.status()
    if !status.initialized {
        let result = try vault.initialize(shares: 5, threshold: 3)
        say("initialised: 5 unseal keys, any 3 unseal; root token issued")
        // A real deployment hands each key to a different operator. The demo keeps them in a file
        // so that a second run can unseal; never do this with real secrets.
        let text = (result.hexKeys + [result.rootToken]).joined(separator: "\n") + "\n"
        let fd = open(stateFile, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        say("wrote the demo unseal keys and root token to \(stateFile) (mode 0600)")
        vault.seal()
        say("sealed again, to show unsealing")
        for (i, key) in result.hexKeys.prefix(3).enumerated() {
            let s = try vault.unseal(key: key)
            say("unseal key \(i + 1) accepted: progress \(s.progress)/\(s.threshold), sealed=\(s.sealed)")
        }
        rootToken = result.rootToken
        _ = try vault.handle(
            Request(.update, "sys/mounts/secret", data: ["type": "kv", "options": ["version": "2"]], token: rootToken)
        )
        say("mounted secret/ as KV v2")
    } else {
        guard let fp = fopen(stateFile, "r") else {
            print("\(path) is initialised but \(stateFile) is missing; remove \(folder) to start over")
            exit(1)
        }
        var lines: [String] = []
        var buffer = [CChar](repeating: 0, count: 256)
        while fgets(&buffer, 256, fp) != nil {
            let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            lines.append(line.filter { !$0.isNewline })
        }
        fclose(fp)
        rootToken = lines.last ?? ""
        say("found an existing vault (sealed=\(status.sealed)); unsealing with 3 of its 5 keys")
        for key in lines.dropLast().suffix(3) { try vault.unseal(key: key) }
    }

    let kv = vault.kv(token: rootToken)
    let version = try kv.put("quickstart/db", ["username": "app", "password": "correct horse battery staple"])
    say("wrote secret/quickstart/db: version \(version)")
    guard let secret = try kv.get("quickstart/db") else {
        print("the secret just written could not be read back")
        exit(1)
    }
    say(
        "read secret/quickstart/db version \(secret.version): username=\(secret.data["username"]?.stringValue ?? "?"), password=<\(secret.data["password"]?.stringValue?.count ?? 0) characters>"
    )
    let limited = try vault.handle(
        Request(.update, "auth/token/create", data: ["policies": ["default"], "ttl": "1h"], token: rootToken)
    )
    let token = limited.auth?.clientToken ?? ""
    do {
        _ = try vault.kv(token: token).get("quickstart/db")
        say("unexpected: a token with only the default policy read the secret")
    } catch {
        say(
            "a token with only the default policy is refused: \(error) (code \(error.code), HTTP \(error.code.httpStatus))"
        )
    }
    vault.close()
    say("closed; run again to reopen \(path), unseal, and write version \(version + 1)")
} catch {
    print("error: \(error) (code \(error.code))")
    exit(1)
}
