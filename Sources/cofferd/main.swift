// cofferd: the Coffer server. `cofferd -dev` for development, `cofferd -config=coffer.hcl` for real.
import Coffer
import CofferAgent
import CofferServer
import CofferServerCore
import Foundation

// `cofferd agent ...`: the local caching proxy (Sources/CofferAgent, docs/run-and-agent.md).
if CommandLine.arguments.dropFirst().first == "agent" {
    exit(await agentMain(Array(CommandLine.arguments.dropFirst(2))))
}

let usage = """
    Usage: cofferd -config=<file> [options]
           cofferd -dev [-dev-root-token-id=<id>] [-dev-listen-address=<host:port>] [options]
           cofferd agent -config=<agent.hcl>   (a local caching proxy with auto-auth: docs/run-and-agent.md)

    Serves Coffer over the Vault/OpenBao v1 HTTP API, so the bao/vault CLI, hvac and other
    Vault clients work with it unchanged.

      -config=<file>              HCL configuration file (also BAO_CONFIG_PATH / VAULT_CONFIG_PATH)
      -dev                        in-memory, unsealed, secret/ as KV v2, HTTP on 127.0.0.1:8200
      -dev-root-token-id=<id>     the dev root token (default: random; also BAO_DEV_ROOT_TOKEN_ID)
      -dev-listen-address=<addr>  the dev listener (also BAO_DEV_LISTEN_ADDRESS)
      -log-level=<level>          trace, debug, info, warn, error (also BAO_LOG_LEVEL)
      -log-format=<format>        text or json (also BAO_LOG_FORMAT)
      -version                    print the version and exit

    Signals: SIGTERM/SIGINT stop gracefully; SIGHUP reloads the log level and TLS certificate.
    Configuration reference: docs/server.md.
    """

func fail(_ message: String, status: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("cofferd: \(message)\n".utf8))
    exit(status)
}

// MARK: Flags (Go style: -name=value, -name value, --name=value; `cofferd server ...` works too)

func parseFlags(_ arguments: [String]) -> [String: String] {
    var arguments = arguments
    if arguments.first == "server" { arguments.removeFirst() }
    var flags: [String: String] = [:]
    let booleanFlags: Set = ["dev", "version", "help", "h"]
    let valueFlags: Set = ["config", "dev-root-token-id", "dev-listen-address", "log-level", "log-format"]
    var index = 0
    while index < arguments.count {
        var argument = arguments[index]
        index += 1
        guard argument.hasPrefix("-") else { fail("unexpected argument \"\(argument)\"\n\n\(usage)", status: 2) }
        argument = String(argument.drop { $0 == "-" })
        let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
        let name = parts.first ?? ""
        if booleanFlags.contains(name) {
            flags[name] = parts.count > 1 ? parts[1] : "true"
        } else if valueFlags.contains(name) {
            if parts.count > 1 {
                flags[name] = parts[1]
            } else if index < arguments.count {
                flags[name] = arguments[index]
                index += 1
            } else {
                fail("-\(name) needs a value", status: 2)
            }
        } else {
            fail("unknown flag -\(name)\n\n\(usage)", status: 2)
        }
    }
    return flags
}

let flags = parseFlags(Array(CommandLine.arguments.dropFirst()))
if flags["help"] != nil || flags["h"] != nil {
    print(usage)
    exit(0)
}
if flags["version"] != nil {
    print("Coffer v\(CofferVersion.versionString)")
    exit(0)
}

// COFFER_HSM_PIN is left to the pkcs11 seal, which takes it out of the environment: this copy,
// kept for the life of the process, must not hold it.
let environment = ProcessInfo.processInfo.environment.filter { $0.key != "COFFER_HSM_PIN" }
func env(_ name: String) -> String? {
    (environment["BAO_" + name] ?? environment["VAULT_" + name]).flatMap { $0.isEmpty ? nil : $0 }
}
let dev = flags["dev"].map { $0 != "false" } ?? false
let configPath = flags["config"] ?? env("CONFIG_PATH")
if !dev && configPath == nil { fail("give -config=<file> or -dev\n\n\(usage)", status: 2) }

/// The configuration as it is now: file (or dev defaults), then environment, then flags. Also what SIGHUP re-reads.
@Sendable func loadConfig() throws -> ServerConfig {
    var config = ServerConfig()
    if let configPath {
        let text: String
        do {
            text = try String(contentsOfFile: configPath, encoding: .utf8)
        } catch {
            throw ConfigError("cannot read the configuration file \(configPath): \(error.localizedDescription)")
        }
        do {
            config = try ServerConfig.parse(text)
        } catch {
            throw ConfigError("\(configPath): \(error)")
        }
    }
    if dev {
        config.storage = .memory
        config.listener.tlsDisable = true
        config.listener.unauthenticatedMetricsAccess = true  // as `bao server -dev`
        config.listener.address = flags["dev-listen-address"] ?? env("DEV_LISTEN_ADDRESS") ?? "127.0.0.1:8200"
    }
    try config.applyEnvironment(environment)
    if let level = flags["log-level"] { config.logLevel = try ServerConfig.logLevel(level, line: nil) }
    if let format = flags["log-format"] { config.logFormat = try ServerConfig.logFormat(format, line: nil) }
    try config.validate()
    return config
}

let config: ServerConfig
do {
    config = try loadConfig()
} catch {
    fail("\(error)")
}
let output = LogOutput(level: config.logLevel, format: config.logFormat)
let logger = output.logger("coffer")

// MARK: Open the vault

let vault: Vault
if dev {
    let rootToken = flags["dev-root-token-id"] ?? env("DEV_ROOT_TOKEN_ID") ?? "s." + Random.base62(24)
    do {
        let (devVault, unsealKey) = try Vault.openDev(storage: .memory, rootTokenID: rootToken)
        vault = devVault
        let address = "http://\(config.listener.address)"
        let key = unsealKey.withUnsafeBytes { Base64.encode($0) }
        FileHandle.standardOutput.write(
            Data(
                """
                ==> Coffer server configuration:

                             Api Address: \(config.apiAddr ?? address)
                               Log Level: \(config.logLevel)
                                 Storage: memory
                                    Seal: shamir (1 share, threshold 1)
                                 Version: Coffer v\(CofferVersion.versionString) (speaks the Vault/OpenBao v1 API)

                WARNING! dev mode is enabled! In this mode, Coffer runs entirely in-memory
                and starts unsealed with a single unseal key.

                You may need to set the following environment variables:

                    $ export BAO_ADDR='\(address)'
                    $ export BAO_TOKEN='\(rootToken)'

                The unseal key and root token are displayed below in case you want to
                seal/unseal the Vault or re-authenticate.

                Unseal Key: \(key)
                Root Token: \(rootToken)

                Development mode should NOT be used in production installations!

                """.utf8
            )
        )
    } catch {
        fail("cannot start the dev vault: \(error)")
    }
} else {
    let storage: VaultConfiguration.Storage
    switch config.storage {
    case .sqlite(let path): storage = .sqlite(path: path)
    case .memory: storage = .memory
    case .raft(let raft):
        // validate() made sure both addresses are there.
        var node = RaftConfiguration(
            path: raft.path,
            nodeName: raft.nodeID,
            clusterAddress: config.clusterListenAddress ?? "",
            apiAddress: config.apiAddr ?? ""
        )
        node.listenAddress = config.listener.clusterAddress
        node.retryJoin = raft.retryJoin
        node.nonVoter = raft.nonVoter
        (node.tlsCertFile, node.tlsKeyFile, node.tlsCAFile) = (raft.tlsCertFile, raft.tlsKeyFile, raft.tlsCAFile)
        node.leaderCACertFile = raft.leaderCACertFile
        (node.leaderClientCertFile, node.leaderClientKeyFile) = (raft.leaderClientCertFile, raft.leaderClientKeyFile)
        node.onJoinFailure = { [logger] reason in
            logger.warning("cannot join the cluster yet; retrying", metadata: ["error": "\(reason)"])
        }
        let raftLogger = output.logger("storage.raft")
        node.onRaftEvent = { message, isWarning in
            if isWarning { raftLogger.warning("\(message)") } else { raftLogger.info("\(message)") }
        }
        storage = .raft(node)
    }
    let seal: any Seal
    do {
        // Callers of sys/unseal and sys/init need no token: the seal's errors reach them without the
        // module path, token and key names, which go to the log instead.
        seal =
            try config.pkcs11Seal.map { (fields) throws(CofferError) in
                var configuration = try PKCS11Configuration(json: fields)
                if let pin = config.pkcs11PIN { configuration.pin = pin }
                return try PKCS11Seal(configuration) { [logger] error in
                    logger.error(
                        "the pkcs11 seal failed",
                        metadata: ["code": "\(error.code)", "error": "\(error.message)"]
                    )
                }
            } ?? ShamirSeal()
    } catch {
        fail("seal \"pkcs11\": \(error)")
    }
    do {
        // With the pkcs11 seal an initialised vault unseals itself through the HSM here.
        var limits = Limits()
        if config.disableCache { limits.readCacheBytes = 0 }
        vault = try Vault.open(VaultConfiguration(storage: storage, seal: seal, limits: limits))
    } catch {
        fail("cannot open the vault: \(error)")
    }
    let status = (try? vault.status())
    logger.info(
        "storage opened",
        metadata: [
            "storage": "\(config.storage)", "initialized": "\(status?.initialized ?? false)",
            "sealed": "\(status?.sealed ?? true)",
        ]
    )
}

// MARK: Serve

let server: CofferHTTPServer
do {
    server = try CofferHTTPServer(
        vault: vault,
        config: config,
        logOutput: output,
        reloadConfig: configPath == nil ? nil : loadConfig
    )
} catch {
    vault.close()
    fail("\(error)")
}
do {
    try await server.run()
} catch {
    fail("cannot serve on \(config.listener.address): \(error)")
}
