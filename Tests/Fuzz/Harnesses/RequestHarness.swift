import Coffer
import CofferCore
import CofferFramework
import CofferStorage
import CofferVault
import Engines
import Synchronization

extension FuzzHarness {
    /// `Wire.handle` (`Vault.handleWire`), the entry `coffer_request` (the C ABI) and cofferd both call, on
    /// a development vault with KV v2 at `secret/`, KV v1 at `kv/` and transit at `transit/`.
    ///
    /// An input is up to eight requests separated by a line `%%`. Each request is a line
    /// `METHOD PATH [TOKEN]` followed by its body (the rest, up to the separator). TOKEN is `root`
    /// (the default), `limited` (a token with a policy over `secret/` and `transit/`), `none`,
    /// `last` (the client token of the last response in this input that created one) or anything
    /// else, sent as the token. Every input starts from the same vault state: the storage is put
    /// back and the vault unsealed again before each input, so a crash reproduces from its input
    /// alone.
    ///
    /// Checks that every answer has an HTTP status, that every body is JSON, and that no request
    /// makes an internal error (500): Coffer's own storage is in memory here, so a 500 means some
    /// input was not validated.
    ///
    /// Requests that would reach outside the process are skipped: anything whose path mentions
    /// `audit` (file and socket audit devices write files and open connections wherever their
    /// options say); and so are writes that make RSA keys (a type `rsa-…` in the body or path, a
    /// rotation of the ready `rsa` key), which take seconds each in a debug build.
    public static let request = FuzzHarness(
        name: "request",
        summary: "Wire.handle (coffer_request, cofferd) on a dev vault with KV v1, KV v2, transit"
    ) { input in
        FuzzVault.shared.run(Array(input))
    }
}

/// The same instant for every request, so that an input behaves the same on every run.
struct FixedClock: WallClock {
    func now() -> Timestamp { Timestamp(seconds: 1_800_000_000) }
}

/// The development vault the request harness drives, and its saved initial state.
final class FuzzVault: Sendable {
    static let shared = FuzzVault()

    let core: Core
    let storage: InMemoryBackend
    let initial: [String: [UInt8]]
    let unsealKey: [UInt8]
    let lock = Mutex(())

    static let rootToken = "root"
    static let limitedToken = "limited"
    static let maximumRequests = 8

    private init() {
        storage = InMemoryBackend()
        do {
            core = try Core(storage: storage, engines: BuiltinEngines.registry, clock: FixedClock())
            let result = try core.initialize(shares: 1, threshold: 1)
            unsealKey = result.keys[0].unsafeCopy
            let setup: [(String, String, String)] = [
                ("POST", "auth/token/create", #"{"id":"root","policies":["root"],"no_parent":true}"#),
                ("POST", "sys/mounts/secret", #"{"type":"kv","options":{"version":"2"}}"#),
                ("POST", "sys/mounts/kv", #"{"type":"kv","options":{"version":"1"}}"#),
                ("POST", "sys/mounts/transit", #"{"type":"transit"}"#),
                ("PUT", "secret/data/app", #"{"data":{"password":"s3cret","nested":{"a":[1,2,{"b":null}]}}}"#),
                ("PUT", "kv/app", #"{"password":"s3cret"}"#),
                ("POST", "transit/keys/aes", #"{"type":"aes256-gcm96"}"#),
                ("POST", "transit/keys/ec", #"{"type":"ecdsa-p256"}"#),
                ("POST", "transit/keys/ed", #"{"type":"ed25519"}"#),
                ("POST", "transit/keys/rsa", #"{"type":"rsa-2048"}"#),
                (
                    "PUT", "sys/policies/acl/limited",
                    #"{"policy":"path \"secret/data/app*\" { capabilities = [\"read\", \"update\"] allowed_parameters = { \"data\" = [] } }\npath \"transit/encrypt/aes\" { capabilities = [\"update\"] }"}"#
                ),
                ("POST", "auth/token/create", #"{"id":"limited","policies":["limited"],"no_parent":true}"#),
            ]
            for (method, path, body) in setup {
                let answer = Wire.handle(
                    core,
                    method: method,
                    path: path,
                    token: result.rootToken,
                    body: Array(body.utf8)
                )
                guard answer.status < 300 else {
                    fatalError(
                        "fuzz vault setup: \(method) \(path) answered \(answer.status): "
                            + String(decoding: answer.body ?? [], as: UTF8.self)
                    )
                }
            }
            _ = Wire.handle(core, method: "POST", path: "auth/token/revoke-self", token: result.rootToken, body: [])
        } catch {
            fatalError("fuzz vault setup failed: \(error)")
        }
        initial = storage.snapshot()
    }

    /// Puts the initial state back and unseals, then runs the input's requests.
    func run(_ input: [UInt8]) -> String? {
        lock.withLock { _ in
            core.sealVault()
            storage.restore(initial)
            do {
                try core.unseal(key: unsealKey)
            } catch {
                return "the vault did not unseal from its initial state: \(error)"
            }
            var lastClientToken: String?
            for request in FuzzVault.requests(in: input) {
                if request.skipped { continue }
                let token: String?
                switch request.token {
                case "", "root": token = FuzzVault.rootToken
                case "limited": token = FuzzVault.limitedToken
                case "none": token = nil
                case "last": token = lastClientToken ?? FuzzVault.rootToken
                default: token = request.token
                }
                let answer = Wire.handle(
                    core,
                    method: request.method,
                    path: request.path,
                    token: token,
                    body: request.body
                )
                if let problem = FuzzVault.check(answer, request) { return problem }
                if let body = answer.body,
                    let value = try? JSONValue.parse(body, maximumDepth: JSONValue.maximumDepth + 4),
                    case .string(let created)? = value["auth"]?["client_token"]
                {
                    lastClientToken = created
                }
            }
            return nil
        }
    }

    static func check(_ answer: WireResult, _ request: FuzzRequest) -> String? {
        let what = "\(request.method) \(request.path)"
        guard (200...599).contains(answer.status) else { return "\(what) answered status \(answer.status)" }
        if answer.status == 500 {
            let detail =
                answer.error.map { "\($0.code): \($0.message)" } ?? String(decoding: answer.body ?? [], as: UTF8.self)
            return "\(what) answered 500 (\(detail))"
        }
        if let body = answer.body {
            // Responses wrap data in an envelope, so they may nest a few levels deeper than requests.
            guard (try? JSONValue.parse(body, maximumDepth: JSONValue.maximumDepth + 4)) != nil else {
                return "\(what) answered a body that is not JSON"
            }
        }
        return nil
    }

    /// Splits an input into requests: separated by lines `%%`; each is `METHOD PATH [TOKEN]\n` and a body.
    static func requests(in input: [UInt8]) -> [FuzzRequest] {
        var out: [FuzzRequest] = []
        let separator: [UInt8] = Array("\n%%\n".utf8)
        var rest = input[...]
        while !rest.isEmpty && out.count < maximumRequests {
            let chunk: ArraySlice<UInt8>
            if let at = firstRange(of: separator, in: rest) {
                chunk = rest[rest.startIndex..<at]
                rest = rest[(at + separator.count)...]
            } else {
                chunk = rest
                rest = []
            }
            let headEnd = chunk.firstIndex(of: UInt8(ascii: "\n")) ?? chunk.endIndex
            let head = String(decoding: chunk[chunk.startIndex..<headEnd], as: UTF8.self)
            let body = headEnd < chunk.endIndex ? Array(chunk[(headEnd + 1)...]) : []
            let fields = head.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            out.append(
                FuzzRequest(
                    method: fields[0],
                    path: fields.count > 1 ? fields[1] : "",
                    token: fields.count > 2 ? fields[2] : "",
                    body: body
                )
            )
        }
        return out
    }

    static func firstRange(of needle: [UInt8], in haystack: ArraySlice<UInt8>) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        var i = haystack.startIndex
        while i + needle.count <= haystack.endIndex {
            if haystack[i] == needle[0] && haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}

/// One request of a request-harness input.
struct FuzzRequest {
    var method: String
    var path: String
    var token: String
    var body: [UInt8]

    /// Requests the harness does not send (see ``FuzzHarness/request``).
    var skipped: Bool {
        // File and socket audit devices write files and open connections wherever their options say.
        if path.lowercased().contains("audit") { return true }
        // RSA keys take seconds to generate in a debug build: no new ones (a type `rsa-…` in the body or
        // the query) and no rotation of the ready `rsa` key; operations with that key go through.
        if method != "GET" && method != "LIST" {
            if path.contains("rsa-") || FuzzVault.firstRange(of: Array("rsa-".utf8), in: body[...]) != nil {
                return true
            }
            if path.contains("rsa/rotate") { return true }
        }
        return false
    }
}
