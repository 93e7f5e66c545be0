package import CofferCore
package import CofferFramework

/// A role (`roles/<name>`): what `issue/<role>` and `sign/<role>` may put in a certificate. Stored as
/// the object a read returns, every field present (OpenBao's defaults filled in at write).
struct PKIRole: Sendable {
    var fields: [String: JSONValue]

    /// Every role field with OpenBao 2.7's default, in the form a read returns.
    static let defaults: [String: JSONValue] = [
        "allow_any_name": false, "allow_bare_domains": false, "allow_glob_domains": false,
        "allow_globs_in_identity_templates": false, "allow_ip_sans": true, "allow_localhost": true,
        "allow_subdomains": false, "allow_token_displayname": false, "allow_wildcard_certificates": true,
        "allowed_domains": [], "allowed_domains_template": false, "allowed_ip_sans_cidr": [],
        "allowed_other_sans": [], "allowed_serial_numbers": [], "allowed_uri_sans": [],
        "allowed_uri_sans_template": false, "allowed_user_ids": [], "basic_constraints_valid_for_non_ca": false,
        "client_flag": true, "cn_validations": ["email", "hostname"], "code_signing_flag": false, "country": [],
        "email_protection_flag": false, "enforce_hostnames": true, "ext_key_usage": [], "ext_key_usage_oids": [],
        "generate_lease": false, "issuer_ref": "default", "key_bits": 0, "key_type": "rsa",
        "key_usage": ["DigitalSignature", "KeyAgreement", "KeyEncipherment"], "locality": [], "max_ttl": 0,
        "no_store": false, "not_after": "", "not_after_bound": "permit", "not_before": "",
        "not_before_bound": "permit", "not_before_duration": 30, "organization": [], "ou": [],
        "policy_identifiers": [], "postal_code": [], "province": [], "require_cn": true, "server_flag": true,
        "signature_bits": 0, "street_address": [], "ttl": 0, "use_csr_common_name": true, "use_csr_sans": true,
        "use_pss": false,
    ]

    /// Fields Coffer stores and shows but does not act on yet: setting one to anything but its
    /// default is refused, so a role never promises what the engine would not do.
    static let unsupported: Set<String> = [
        "allow_globs_in_identity_templates", "allow_token_displayname", "allowed_domains_template",
        "allowed_other_sans", "allowed_serial_numbers", "allowed_uri_sans_template", "allowed_user_ids",
        "not_after", "not_before", "policy_identifiers", "not_after_bound", "not_before_bound",
    ]

    func bool(_ name: String) -> Bool { fields[name]?.boolValue ?? PKIRole.defaults[name]?.boolValue ?? false }
    func int(_ name: String) -> Int { fields[name]?.intValue ?? 0 }
    func string(_ name: String) -> String { fields[name]?.stringValue ?? "" }
    func strings(_ name: String) -> [String] { fields[name]?.arrayValue?.compactMap(\.stringValue) ?? [] }

    var keyType: String { string("key_type") }
    /// `key_bits`, with the type's default for 0.
    var keyBits: Int {
        let bits = int("key_bits")
        guard bits == 0 else { return bits }
        return keyType == "ec" ? 256 : keyType == "rsa" ? 2048 : 0
    }
}

/// A CA certificate the mount can sign with (or only chain to, when it has no key here).
struct IssuerEntry: Sendable {
    var id: String
    var name: String
    var keyID: String
    /// The certificate, DER.
    var certificate: [UInt8]
    var leafNotAfterBehavior: String = "err"
    var usage: String = "crl-signing,issuing-certificates,ocsp-signing,read-only"
    var issuingCertificates: [String] = []
    var crlDistributionPoints: [String] = []
    var ocspServers: [String] = []
    /// Set when `revoke` was asked of this issuer itself (`issuer/<ref>/revoke`, not served yet).
    var revoked = false

    var json: JSONValue {
        [
            "issuer_id": .string(id), "issuer_name": .string(name), "key_id": .string(keyID),
            "certificate": .string(Base64.encode(certificate)),
            "leaf_not_after_behavior": .string(leafNotAfterBehavior),
            "usage": .string(usage), "issuing_certificates": .array(issuingCertificates.map { .string($0) }),
            "crl_distribution_points": .array(crlDistributionPoints.map { .string($0) }),
            "ocsp_servers": .array(ocspServers.map { .string($0) }), "revoked": .bool(revoked),
        ]
    }

    init(id: String, name: String, keyID: String, certificate: [UInt8]) {
        self.id = id
        self.name = name
        self.keyID = keyID
        self.certificate = certificate
    }

    init(stored: JSONValue) throws(CofferError) {
        guard case .object(let o) = stored, let id = o["issuer_id"]?.stringValue,
            let certificate = o["certificate"]?.stringValue.flatMap(Base64.decode)
        else { throw CofferError(.integrity, "a stored PKI issuer is malformed") }
        self.init(
            id: id,
            name: o["issuer_name"]?.stringValue ?? "",
            keyID: o["key_id"]?.stringValue ?? "",
            certificate: certificate
        )
        leafNotAfterBehavior = o["leaf_not_after_behavior"]?.stringValue ?? "err"
        usage = o["usage"]?.stringValue ?? usage
        issuingCertificates = o["issuing_certificates"]?.arrayValue?.compactMap(\.stringValue) ?? []
        crlDistributionPoints = o["crl_distribution_points"]?.arrayValue?.compactMap(\.stringValue) ?? []
        ocspServers = o["ocsp_servers"]?.arrayValue?.compactMap(\.stringValue) ?? []
        revoked = o["revoked"]?.boolValue ?? false
    }

    func allows(_ use: String) -> Bool { usage.split(separator: ",").contains { $0 == use } }
}

/// A private key the mount holds (`key/<id>`), stored seal-wrapped.
struct KeyEntry: Sendable {
    var id: String
    var name: String
    /// PKCS#8 or the type's own DER (what `d2i_AutoPrivateKey` reads).
    var der: [UInt8]

    var json: JSONValue {
        ["key_id": .string(id), "key_name": .string(name), "private_key": .string(Base64.encode(der))]
    }

    init(id: String, name: String, der: [UInt8]) {
        self.id = id
        self.name = name
        self.der = der
    }

    init(stored: JSONValue) throws(CofferError) {
        guard case .object(let o) = stored, let id = o["key_id"]?.stringValue,
            let der = o["private_key"]?.stringValue.flatMap(Base64.decode)
        else { throw CofferError(.integrity, "a stored PKI key is malformed") }
        self.init(id: id, name: o["key_name"]?.stringValue ?? "", der: der)
    }
}

/// A certificate the mount issued (`certs/<serial>`), unless its role said `no_store`.
struct CertRecord: Sendable {
    var certificate: [UInt8]
    var issuerID: String
    var notAfter: Int64
    /// Seconds since 1970 and the nanosecond instant (for the RFC 3339 form), when revoked.
    var revokedAt: Timestamp?

    var json: JSONValue {
        var o: [String: JSONValue] = [
            "certificate": .string(Base64.encode(certificate)), "issuer_id": .string(issuerID),
            "not_after": .int(notAfter),
        ]
        if let revokedAt { o["revoked_at"] = .int(revokedAt.nanoseconds) }
        return .object(o)
    }

    init(certificate: [UInt8], issuerID: String, notAfter: Int64, revokedAt: Timestamp? = nil) {
        self.certificate = certificate
        self.issuerID = issuerID
        self.notAfter = notAfter
        self.revokedAt = revokedAt
    }

    init(stored: JSONValue) throws(CofferError) {
        guard case .object(let o) = stored, let certificate = o["certificate"]?.stringValue.flatMap(Base64.decode)
        else { throw CofferError(.integrity, "a stored PKI certificate is malformed") }
        self.init(
            certificate: certificate,
            issuerID: o["issuer_id"]?.stringValue ?? "",
            notAfter: Int64(o["not_after"]?.intValue ?? 0),
            revokedAt: o["revoked_at"]?.intValue.map { Timestamp(nanoseconds: Int64($0)) }
        )
    }
}

/// A revocation (`revoked/<serial>`): what the CRL needs, without the certificate, so a
/// certificate that was never stored can be revoked too.
struct RevokedRecord: Sendable {
    var serial: [UInt8]
    var issuerID: String
    var revokedAt: Timestamp
    var notAfter: Int64

    var json: JSONValue {
        [
            "serial_number": .string(SerialText.colons(serial)), "issuer_id": .string(issuerID),
            "revoked_at": .int(revokedAt.nanoseconds), "not_after": .int(notAfter),
        ]
    }

    init(serial: [UInt8], issuerID: String, revokedAt: Timestamp, notAfter: Int64) {
        self.serial = serial
        self.issuerID = issuerID
        self.revokedAt = revokedAt
        self.notAfter = notAfter
    }

    init(stored: JSONValue) throws(CofferError) {
        guard case .object(let o) = stored, let serial = o["serial_number"]?.stringValue.flatMap(SerialText.serial),
            let at = o["revoked_at"]?.intValue
        else { throw CofferError(.integrity, "a stored PKI revocation is malformed") }
        self.init(
            serial: serial,
            issuerID: o["issuer_id"]?.stringValue ?? "",
            revokedAt: Timestamp(nanoseconds: Int64(at)),
            notAfter: Int64(o["not_after"]?.intValue ?? 0)
        )
    }
}

/// Storage keys under the mount.
enum PKIStorage {
    static let issuerPrefix = "issuer/"
    static let keyPrefix = "key/"
    static let rolePrefix = "role/"
    static let certPrefix = "certs/"
    static let revokedPrefix = "revoked/"
    static let issuersConfig = "config/issuers"
    static let keysConfig = "config/keys"
    static let urlsConfig = "config/urls"
    static let crlConfig = "config/crl"
    static let serialKey = "config/serial-key"

    /// `certs/` and `revoked/` name serials with dashes ("1c-2a-…").
    static func name(_ serial: [UInt8]) -> String { SerialText.colons(serial, separator: UInt8(ascii: "-")) }
}

/// Go's multierror text, which OpenBao gives on many of its 500s (clients print it verbatim).
func multierror(_ message: String) -> String { "1 error occurred:\n\t* \(message)\n\n" }
