import Coffer
// `cofferd agent -config=agent.hcl`: flags, configuration, and the upstream with auto-auth.
import CofferCore
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
    let upstream = ClientUpstream(address: upstreamAddress, caPEM: caPEM, config: config, logger: logger)
    if config.autoAuth != nil {
        // Not fatal: the upstream may come up later; requests retry the login.
        upstream.loginNow()
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

/// The upstream through the library's ``RemoteClient``: its retries with backoff, and its AppRole
/// or JWT login with renewal (and a new login on a 403) for the agent's own token. The role ID,
/// secret ID and JWT files are read when a client is made, and again (a new client) when a login
/// is refused, so a rotated secret ID or JWT file is picked up.
final class ClientUpstream: AgentUpstream {
    let address: String
    let caPEM: String?
    let config: AgentConfig
    let logger: Logger
    /// The client, made on first use (a failed login leaves none, so the next request tries again).
    let client = Mutex<RemoteClient?>(nil)
    /// The secret ID read last (the file may be removed after reading).
    let secretID = Mutex<String?>(nil)
    /// The token last written to the sink.
    let sunk = Mutex<String?>(nil)

    init(address: String, caPEM: String?, config: AgentConfig, logger: Logger) {
        self.address = address
        self.caPEM = caPEM
        self.config = config
        self.logger = logger
    }

    func makeClient() throws -> RemoteClient {
        let auth: RemoteConfiguration.Auth
        func mount(_ path: String) -> String { path.hasPrefix("auth/") ? String(path.dropFirst(5)) : path }
        switch config.autoAuth {
        case nil:
            // No auto-auth: only clients' own tokens are forwarded; this one is never sent.
            auth = .token("-")
        case .appRole(let path, let roleIDFile, let secretIDFile, let remove)?:
            guard let roleID = readTrimmed(roleIDFile) else {
                throw UpstreamError(description: "cannot read role_id_file_path \(roleIDFile)")
            }
            if let fresh = readTrimmed(secretIDFile) {
                secretID.withLock { $0 = fresh }
                if remove { unlink(secretIDFile) }
            }
            guard let secret = secretID.withLock({ $0 }) else {
                throw UpstreamError(description: "cannot read secret_id_file_path \(secretIDFile)")
            }
            auth = .appRole(roleID: roleID, secretID: secret, mount: mount(path))
        case .jwt(let path, let file, let role)?:
            guard let jwt = readTrimmed(file) else {
                throw UpstreamError(description: "cannot read the JWT file \(file)")
            }
            auth = .jwt(role: role, jwt: jwt, mount: mount(path))
        }
        var configuration = RemoteConfiguration(
            address: address,
            auth: auth,
            caPEM: caPEM,
            namespace: config.namespace ?? ""
        )
        configuration.cache.invalidateOnEvents = false  // the agent caches raw answers itself
        configuration.cache.maxBytes = 0
        configuration.fallback.environment = false
        configuration.timeout = 30
        do {
            return try RemoteClient(configuration)
        } catch {
            throw UpstreamError(description: error.message)
        }
    }

    /// The client, made if there is none.
    func current() throws -> RemoteClient {
        try client.withLock { (client: inout RemoteClient?) throws -> RemoteClient in
            if let client { return client }
            let made = try makeClient()
            client = made
            return made
        }
    }

    func loginNow() {
        do {
            let made = try current()
            sink(made)
        } catch {
            logger.warning(
                "auto-auth: the first login failed; retrying on each request",
                metadata: ["error": "\(error)"]
            )
        }
    }

    func forward(
        method: String,
        target: String,
        body: [UInt8],
        token: String?,
        namespace: String?
    ) throws -> (status: Int, body: [UInt8]) {
        let made = try current()
        do {
            let response = try made.request(method, target, body: body, token: token, namespace: namespace)
            if token == nil { sink(made) }
            return (response.status, response.body)
        } catch  where error.code == .unavailable {
            throw UpstreamError(description: error.message)
        } catch {
            // The agent's login was refused (a secret ID used up or expired, a JWT rotated): a new
            // client reads the files again, once.
            guard token == nil else { throw UpstreamError(description: error.message) }
            logger.warning(
                "auto-auth: login refused; reading the credentials again",
                metadata: ["error": "\(error.message)"]
            )
            let fresh = try client.withLock { (client: inout RemoteClient?) throws -> RemoteClient in
                client?.close()
                client = nil
                let made = try makeClient()
                client = made
                return made
            }
            do {
                let response = try fresh.request(method, target, body: body, token: nil, namespace: namespace)
                sink(fresh)
                return (response.status, response.body)
            } catch {
                throw UpstreamError(description: error.message)
            }
        }
    }

    func readTrimmed(_ path: String) -> String? {
        guard let bytes = readWholeFile(path, limit: 64 << 10) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace }
        return text.isEmpty ? nil : text
    }

    /// Writes the client's token to the sink file when it changed (mode from the config, replaced
    /// atomically).
    func sink(_ client: RemoteClient) {
        guard let path = config.sinkFile, config.autoAuth != nil, let token = try? client.token else { return }
        guard sunk.withLock({ $0 }) != token else { return }
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
            return
        }
        sunk.withLock { $0 = token }
        logger.info("auto-auth: token written to the sink", metadata: ["path": "\(path)"])
    }
}
