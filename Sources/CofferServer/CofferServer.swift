public import Coffer
public import CofferServerCore
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// cofferd: a ``Vault`` served over HTTP(S) with the Vault/OpenBao v1 wire protocol.
///
/// ```swift
/// let output = LogOutput(level: config.logLevel, format: config.logFormat)
/// let server = try CofferHTTPServer(vault: vault, config: config, logOutput: output)
/// try await server.run()   // until SIGTERM or SIGINT
/// ```
public final class CofferHTTPServer: Sendable {
    public let vault: Vault
    public let config: ServerConfig
    let output: LogOutput
    let logger: Logger
    let tls: TLSCertificates?
    /// Reads the configuration again for SIGHUP (file, environment, flags); nil when there is no file.
    let reloadConfig: (@Sendable () throws -> ServerConfig)?

    /// Checks the configuration and loads the TLS files; serving starts with ``run()``.
    public init(
        vault: Vault,
        config: ServerConfig,
        logOutput: LogOutput,
        reloadConfig: (@Sendable () throws -> ServerConfig)? = nil
    ) throws {
        try config.validate()
        self.vault = vault
        self.config = config
        self.output = logOutput
        self.logger = logOutput.logger("coffer.server")
        self.reloadConfig = reloadConfig
        if config.listener.tlsDisable {
            tls = nil
        } else {
            tls = try TLSCertificates(listener: config.listener)
        }
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, lets requests in flight finish, and
    /// closes the storage. SIGHUP reloads the log level and the TLS certificate and reopens audit devices.
    public func run() async throws {
        let listener = config.listener
        let (host, port) = try listener.hostAndPort()
        let responder = WireResponder(
            vault: vault,
            maxRequestSize: listener.maxRequestSize,
            offloadWrites: vault.storageType != "inmem",
            unauthenticatedMetrics: listener.unauthenticatedMetricsAccess,
            logger: logger
        )
        let http1 = CofferHTTPChannel(
            responder: responder,
            idleTimeout: .seconds(listener.idleTimeout),
            headerTimeout: .seconds(listener.readHeaderTimeout),
            readTimeout: .seconds(listener.readTimeout),
            limiter: ConnectionLimiter(limit: listener.maxConnectionsPerAddress, logger: logger),
            logger: logger,
            events: vault
        )
        let serverConfiguration = ServerConfiguration(
            address: .hostname(host, port: port),
            serverName: nil,
            backlog: 256,
            reuseAddress: true,
            availableConnectionsDelegate: MaximumAvailableConnections(listener.maxConnections, logger: logger)
        )
        let server: any Service
        if let tls {
            server = Server(
                childChannelSetup: try TLSChannel(http1, tlsConfiguration: tls.configuration()),
                configuration: serverConfiguration,
                eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
                logger: logger
            )
        } else {
            server = Server(
                childChannelSetup: http1,
                configuration: serverConfiguration,
                eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
                logger: logger
            )
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: server, serviceName: "http"),
                    .init(
                        service: ReloadOnHangup(server: self),
                        successTerminationBehavior: .ignore,
                        serviceName: "sighup"
                    ),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: output.logger("coffer.lifecycle")
            )
        )
        defer {
            vault.close()
            logger.info("stopped; storage closed")
        }
        try await group.run()
    }

    /// SIGHUP: apply the log level of the configuration as it is now, reopen the audit devices, and
    /// read the TLS files again.
    func reload() {
        if let reloadConfig {
            do {
                let fresh = try reloadConfig()
                output.logLevel = fresh.logLevel
                logger.info("reloaded the configuration", metadata: ["log_level": "\(fresh.logLevel)"])
            } catch {
                logger.error("configuration not reloaded; keeping the current one", metadata: ["error": "\(error)"])
            }
        }
        // Audit files moved away by logrotate are reopened (the file device also notices on its next write).
        do {
            try vault.reopenAuditDevices()
        } catch {
            logger.error("audit devices not reopened", metadata: ["error": "\(error.message)"])
        }
        if let tls {
            do {
                try tls.reload()
                logger.info("reloaded the TLS certificate", metadata: ["file": "\(tls.certFile)"])
            } catch {
                logger.error("TLS certificate not reloaded; keeping the current one", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// Waits for SIGHUP and reloads, until graceful shutdown.
struct ReloadOnHangup: Service {
    let server: CofferHTTPServer

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            server.reload()
        }
    }
}
