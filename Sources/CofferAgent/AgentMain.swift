// `cofferd agent -config=agent.hcl`: flags, configuration, and the upstream with auto-auth.
import CofferCore
import Engines
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

package let agentUsage = """
    Usage: cofferd agent -config=<file> [-log-level=<level>]
           coffer agent -config=<file>          (the same)

    A local caching proxy of the Vault/OpenBao v1 API for applications that cannot link Coffer:
    point BAO_ADDR at its listener. It forwards every request to the upstream cofferd, adds its
    auto-auth token (AppRole or JWT, renewed) to requests that carry none, and serves cached KV
    reads while the upstream cannot be reached. Configuration: docs/run-and-agent.md.

      -config=<file>      the agent's HCL configuration (vault, auto_auth, api_proxy, cache, listener)
      -log-level=<level>  trace, debug, info, warn, error
    """

/// Runs the agent with cofferd's arguments after `agent`; returns the process's exit status.
package func agentMain(_ arguments: [String]) async -> Int32 {
    func fail(_ message: String, _ status: Int32 = 2) -> Int32 {
        let text = "cofferd agent: \(message)\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
        return status
    }
    var configPath: String?
    var logLevel: String?
    var index = 0
    while index < arguments.count {
        let argument = String(arguments[index].drop { $0 == "-" })
        index += 1
        let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
        switch parts.first {
        case "help", "h":
            print(agentUsage)
            return 0
        case "config", "log-level":
            var value = parts.count > 1 ? parts[1] : nil
            if value == nil, index < arguments.count {
                value = arguments[index]
                index += 1
            }
            guard let value else { return fail("-\(parts[0]) needs a value") }
            if parts[0] == "config" { configPath = value } else { logLevel = value }
        default:
            return fail("unknown argument \"\(arguments[index - 1])\"\n\n\(agentUsage)")
        }
    }
    guard let configPath else { return fail("give -config=<file>\n\n\(agentUsage)") }
    var config: AgentConfig
    do {
        guard let bytes = readWholeFile(configPath, limit: 1 << 20) else {
            return fail("cannot read \(configPath): \(String(cString: strerror(errno)))")
        }
        config = try AgentConfig.parse(String(decoding: bytes, as: UTF8.self))
    } catch {
        return fail("\(configPath): \(error)")
    }
    if let logLevel { config.logLevel = logLevel }
    let environment = { (name: String) -> String? in
        getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }
    guard let upstreamAddress = config.upstream ?? environment("BAO_ADDR") ?? environment("VAULT_ADDR") else {
        return fail("\(configPath): give vault { address = \"https://...\" } (or BAO_ADDR)")
    }
    var caPEM: String?
    if let file = config.caCertFile {
        guard let bytes = readWholeFile(file, limit: 1 << 20) else { return fail("cannot read ca_cert \(file)") }
        caPEM = String(decoding: bytes, as: UTF8.self)
    }
    var logger = Logger(label: "coffer.agent")
    logger.logLevel = Logger.Level(rawValue: config.logLevel == "warn" ? "warning" : config.logLevel) ?? .info
    let upstream = DirectUpstream(address: upstreamAddress, caPEM: caPEM, config: config, logger: logger)
    if config.autoAuth != nil {
        do {
            _ = try upstream.autoAuthToken()
        } catch {
            // Not fatal: the upstream may come up later; requests retry the login.
            logger.warning("auto-auth: first login failed; retrying on each request", metadata: ["error": "\(error)"])
        }
    }
    let server = AgentServer(config: config, upstream: upstream, logger: logger)
    do {
        try await server.run()
    } catch {
        return fail("cannot serve on \(config.listenAddress): \(error)", 1)
    }
    return 0
}

func readWholeFile(_ path: String, limit: Int) -> [UInt8]? {
    guard let fp = fopen(path, "rb") else { return nil }
    defer { fclose(fp) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while bytes.count <= limit {
        let n = fread(&chunk, 1, chunk.count, fp)
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return bytes.count <= limit ? bytes : nil
}

struct UpstreamError: Error, CustomStringConvertible {
    let description: String
}

/// The upstream over the engines' HTTP client, with the agent's own login and renewal.
final class DirectUpstream: AgentUpstream {
    struct TokenState {
        var token: String?
        var expires = 0.0
        var ttl = 0.0
        var renewable = false
        var secretID: String?
    }

    let address: String
    let caPEM: String?
    let config: AgentConfig
    let logger: Logger
    let state = Mutex(TokenState())

    init(address: String, caPEM: String?, config: AgentConfig, logger: Logger) {
        self.address = address.hasSuffix("/") ? String(address.dropLast()) : address
        self.caPEM = caPEM
        self.config = config
        self.logger = logger
    }

    func forward(method: String, target: String, body: [UInt8], token: String?) throws -> (status: Int, body: [UInt8]) {
        let used = try token ?? autoAuthToken()
        let answer = try send(method: method, target: target, body: body, token: used)
        if token == nil, answer.status == 403 {
            // The agent's token was revoked or expired early: log in again, once.
            state.withLock { $0.token = nil }
            return try send(method: method, target: target, body: body, token: try autoAuthToken())
        }
        return answer
    }

    func send(method: String, target: String, body: [UInt8], token: String?) throws -> (status: Int, body: [UInt8]) {
        var headers: [(String, String)] = []
        if let token, !token.isEmpty { headers.append(("X-Vault-Token", token)) }
        if let namespace = config.namespace { headers.append(("X-Vault-Namespace", namespace)) }
        if method == "PATCH" { headers.append(("Content-Type", "application/merge-patch+json")) }
        var options = HTTPClient.Options(caPEM: caPEM)
        options.connectTimeout = 2
        options.deadline = 30
        options.maximumBodyBytes = 32 << 20
        do {
            let response = try HTTPClient.send(
                method,
                "\(address)/v1/\(target)",
                headers: headers,
                body: body,
                options: options
            )
            return (response.status, response.body)
        } catch {
            throw UpstreamError(description: error.message)
        }
    }

    func autoAuthToken() throws -> String? {
        guard let method = config.autoAuth else { return nil }
        return try state.withLock { (state: inout TokenState) throws -> String? in
            let now = AgentServer.now()
            if let token = state.token, now < state.expires - state.ttl / 3 { return token }
            if let token = state.token, state.renewable, now < state.expires {
                if let (_, answer) = try? send(method: "POST", target: "auth/token/renew-self", body: [], token: token),
                    let auth = (try? JSONValue.parse(answer))?["auth"], auth["client_token"]?.stringValue == token
                {
                    apply(auth, to: &state, now: now)
                    logger.debug("auto-auth: token renewed")
                    return token
                }
            }
            let (path, body): (String, JSONValue)
            switch method {
            case .appRole(let mount, let roleIDFile, let secretIDFile, let remove):
                guard let roleID = readTrimmed(roleIDFile) else {
                    throw UpstreamError(description: "cannot read role_id_file_path \(roleIDFile)")
                }
                if let fresh = readTrimmed(secretIDFile) {
                    state.secretID = fresh
                    if remove { unlink(secretIDFile) }
                }
                guard let secretID = state.secretID else {
                    throw UpstreamError(description: "cannot read secret_id_file_path \(secretIDFile)")
                }
                (path, body) = ("\(mount)/login", ["role_id": .string(roleID), "secret_id": .string(secretID)])
            case .jwt(let mount, let file, let role):
                guard let jwt = readTrimmed(file) else {
                    throw UpstreamError(description: "cannot read the JWT file \(file)")
                }
                (path, body) = ("\(mount)/login", ["jwt": .string(jwt), "role": .string(role)])
            }
            let (status, answer) = try send(method: "POST", target: path, body: body.serialized(), token: nil)
            guard status == 200, let auth = (try? JSONValue.parse(answer))?["auth"],
                let token = auth["client_token"]?.stringValue
            else {
                throw UpstreamError(description: "login at \(path) failed with status \(status)")
            }
            state.token = token
            apply(auth, to: &state, now: now)
            logger.info("auto-auth: logged in", metadata: ["path": "\(path)"])
            if let sink = config.sinkFile { writeSink(sink, token) }
            return token
        }
    }

    func apply(_ auth: JSONValue, to state: inout TokenState, now: Double) {
        let ttl = Double(auth["lease_duration"]?.intValue ?? 0)
        state.ttl = ttl
        state.expires = ttl > 0 ? now + ttl : .infinity
        state.renewable = auth["renewable"] == .bool(true)
    }

    func readTrimmed(_ path: String) -> String? {
        guard let bytes = readWholeFile(path, limit: 64 << 10) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace }
        return text.isEmpty ? nil : text
    }

    /// Writes the token to the sink file (mode from the config), replaced atomically.
    func writeSink(_ path: String, _ token: String) {
        let temporary = path + ".tmp"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(config.sinkMode))
        guard fd >= 0 else {
            logger.error("auto-auth: cannot write the sink file", metadata: ["path": "\(path)"])
            return
        }
        fchmod(fd, mode_t(config.sinkMode))
        let bytes = Array(token.utf8)
        let written = bytes.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        if written != bytes.count || rename(temporary, path) != 0 {
            unlink(temporary)
            logger.error("auto-auth: cannot write the sink file", metadata: ["path": "\(path)"])
        }
    }
}
