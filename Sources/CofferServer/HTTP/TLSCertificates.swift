public import CofferServerCore
import NIOCore
public import NIOSSL
import Synchronization

/// The listener's TLS: its certificate chain and private key, read from PEM files and read again on
/// SIGHUP, and the settings that stay for the process's life: TLS versions, cipher suites, and the
/// CA certificates client certificates must chain to when they are required.
///
/// Each TLS handshake asks for the current pair (`sslContextCallback`), so a reload takes effect
/// for new connections without a restart; connections already open keep their session.
public final class TLSCertificates: Sendable {
    public let certFile: String
    public let keyFile: String
    let settings: Settings
    private let current: Mutex<Pair>

    /// A certificate chain and the private key that belongs to its leaf.
    struct Pair: Sendable {
        let chain: [NIOSSLCertificateSource]
        let key: NIOSSLPrivateKeySource

        var override: NIOSSLContextConfigurationOverride {
            var o = NIOSSLContextConfigurationOverride()
            o.certificateChain = chain
            o.privateKey = key
            return o
        }
    }

    /// What the listener configuration says about TLS beyond the certificate and key.
    struct Settings: Sendable {
        var minimumVersion = TLSVersion.tlsv12
        var maximumVersion = TLSVersion.tlsv13
        /// IANA code points of the TLS 1.2 suites; nil: the library's default list.
        var cipherSuites: [UInt16]?
        /// The CA certificates a required client certificate must chain to; nil: none is asked for.
        var clientCAs: [NIOSSLCertificate]?
    }

    /// Loads the files named by the listener configuration; throws when one is missing, unreadable,
    /// not PEM, or the key does not match the certificate.
    public convenience init(listener: ServerConfig.Listener) throws {
        guard let certFile = listener.tlsCertFile, let keyFile = listener.tlsKeyFile else {
            throw TLSFileError(
                message: "listener \"tcp\" needs tls_cert_file and tls_key_file unless tls_disable = true"
            )
        }
        var settings = Settings(
            minimumVersion: Self.version(listener.tlsMinVersion),
            maximumVersion: Self.version(listener.tlsMaxVersion),
            cipherSuites: listener.tlsCipherSuites
        )
        if listener.tlsRequireAndVerifyClientCert, let caFile = listener.tlsClientCAFile {
            let cas: [NIOSSLCertificate]
            do {
                cas = try NIOSSLCertificate.fromPEMFile(caFile)
            } catch {
                throw TLSFileError(
                    message: "cannot read the CA certificates from tls_client_ca_file \(caFile): \(error)"
                )
            }
            guard !cas.isEmpty else {
                throw TLSFileError(message: "tls_client_ca_file \(caFile) holds no PEM certificate")
            }
            settings.clientCAs = cas
        }
        try self.init(certFile: certFile, keyFile: keyFile, settings: settings)
    }

    /// Loads both files, with the default settings (TLS 1.2 and 1.3, no client certificates).
    public convenience init(certFile: String, keyFile: String) throws {
        try self.init(certFile: certFile, keyFile: keyFile, settings: Settings())
    }

    init(certFile: String, keyFile: String, settings: Settings) throws {
        self.certFile = certFile
        self.keyFile = keyFile
        self.settings = settings
        self.current = Mutex(try Self.load(certFile: certFile, keyFile: keyFile))
        do {
            // Every setting goes through the TLS library once here, so a problem stops the start.
            _ = try NIOSSLContext(configuration: configuration())
        } catch {
            throw TLSFileError(message: "the TLS settings of listener \"tcp\" are not usable: \(error)")
        }
    }

    /// Reads the files again. On failure the old pair stays in use and the error says why.
    public func reload() throws {
        let fresh = try Self.load(certFile: certFile, keyFile: keyFile)
        current.withLock { $0 = fresh }
    }

    /// The server TLS configuration whose handshakes use the current pair.
    public func configuration() -> TLSConfiguration {
        let pair = current.withLock { $0 }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: pair.chain, privateKey: pair.key)
        // swift-nio-ssl's own minimum is TLS 1.0; the listener's is TLS 1.2 unless configured otherwise.
        tls.minimumTLSVersion = settings.minimumVersion
        tls.maximumTLSVersion = settings.maximumVersion
        if let suites = settings.cipherSuites, !suites.isEmpty {
            // Only code points from ServerConfig.TLSCipherSuites.supported get here: the library knows them all.
            tls.cipherSuiteValues = suites.map { NIOTLSCipher(rawValue: $0) }
        }
        if let cas = settings.clientCAs {
            tls.certificateVerification = .noHostnameVerification  // a client certificate is required and verified
            tls.trustRoots = .certificates(cas)
            tls.sendCANameList = true
        } else {
            tls.certificateVerification = .none
        }
        tls.sslContextCallback = { [self] _, promise in
            promise.succeed(current.withLock { $0.override })
        }
        return tls
    }

    static func version(_ version: ServerConfig.TLSVersion) -> TLSVersion {
        switch version {
        case .tls10: .tlsv1
        case .tls11: .tlsv11
        case .tls12: .tlsv12
        case .tls13: .tlsv13
        }
    }

    static func load(certFile: String, keyFile: String) throws -> Pair {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certFile)
        } catch {
            throw TLSFileError(message: "cannot read the certificate chain from tls_cert_file \(certFile): \(error)")
        }
        guard !chain.isEmpty else { throw TLSFileError(message: "tls_cert_file \(certFile) holds no PEM certificate") }
        do {
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            // The error names the file only: the key's bytes never reach a message.
            throw TLSFileError(message: "cannot read a PEM private key from tls_key_file \(keyFile)")
        }
        let pair = Pair(chain: chain.map { .certificate($0) }, key: .privateKey(key))
        do {
            // Building a context checks that the key belongs to the leaf certificate.
            _ = try NIOSSLContext(
                configuration: .makeServerConfiguration(certificateChain: pair.chain, privateKey: pair.key)
            )
        } catch {
            throw TLSFileError(message: "tls_key_file \(keyFile) does not match the certificate in \(certFile)")
        }
        return pair
    }
}

public struct TLSFileError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
