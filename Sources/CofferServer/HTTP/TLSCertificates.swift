import NIOCore
public import NIOSSL
import Synchronization

/// The listener's certificate chain and private key, read from PEM files and read again on SIGHUP.
///
/// Each TLS handshake asks for the current pair (`sslContextCallback`), so a reload takes effect
/// for new connections without a restart; connections already open keep their session.
public final class TLSCertificates: Sendable {
    public let certFile: String
    public let keyFile: String
    private let current: Mutex<NIOSSLContextConfigurationOverride>

    /// Loads both files; throws when either is missing, unreadable, not PEM, or they do not match.
    public init(certFile: String, keyFile: String) throws {
        self.certFile = certFile
        self.keyFile = keyFile
        self.current = Mutex(try Self.load(certFile: certFile, keyFile: keyFile))
    }

    /// Reads the files again. On failure the old pair stays in use and the error says why.
    public func reload() throws {
        let fresh = try Self.load(certFile: certFile, keyFile: keyFile)
        current.withLock { $0 = fresh }
    }

    /// The server TLS configuration (TLS 1.2 and later) whose handshakes use the current pair.
    public func configuration() -> TLSConfiguration {
        let pair = current.withLock { $0 }
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: pair.certificateChain ?? [], privateKey: pair.privateKey!)
        tls.sslContextCallback = { [self] _, promise in
            promise.succeed(current.withLock { $0 })
        }
        return tls
    }

    static func load(certFile: String, keyFile: String) throws -> NIOSSLContextConfigurationOverride {
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
        var pair = NIOSSLContextConfigurationOverride()
        pair.certificateChain = chain.map { .certificate($0) }
        pair.privateKey = .privateKey(key)
        do {
            // Building a context checks that the key belongs to the leaf certificate.
            _ = try NIOSSLContext(
                configuration: .makeServerConfiguration(certificateChain: pair.certificateChain!, privateKey: pair.privateKey!))
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
