/// The TLS versions and cipher suites of the listener, with Vault's names.
extension ServerConfig {
    /// `tls_min_version` / `tls_max_version`: Vault's spellings.
    public enum TLSVersion: String, Sendable, Equatable, Comparable, CaseIterable {
        case tls10, tls11, tls12, tls13

        public static func < (a: Self, b: Self) -> Bool {
            a.rawValue < b.rawValue  // tls10 < tls11 < tls12 < tls13
        }
    }

    /// `tls_cipher_suites`: Go's names (the IANA names, which Vault takes) and their IANA code points.
    public enum TLSCipherSuites {
        /// The TLS 1.2 (and 1.0/1.1) suites the TLS library (BoringSSL, in swift-nio-ssl) offers.
        public static let supported: [String: UInt16] = [
            "TLS_RSA_WITH_AES_128_CBC_SHA": 0x002F,
            "TLS_RSA_WITH_AES_256_CBC_SHA": 0x0035,
            "TLS_RSA_WITH_AES_128_GCM_SHA256": 0x009C,
            "TLS_RSA_WITH_AES_256_GCM_SHA384": 0x009D,
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": 0xC009,
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": 0xC00A,
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": 0xC013,
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": 0xC014,
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B,
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C,
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": 0xC02F,
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": 0xC030,
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA8,
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA9,
            // Go's older names for the two ChaCha20 suites.
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": 0xCCA8,
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": 0xCCA9,
        ]

        /// TLS 1.3 suites: accepted in the list as Vault does, but always all enabled (neither Go nor
        /// BoringSSL lets them be chosen), so they change nothing.
        public static let tls13: Set<String> = [
            "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
        ]

        /// Suites Go knows (as insecure) that the TLS library does not offer at all.
        public static let withdrawn: Set<String> = [
            "TLS_RSA_WITH_RC4_128_SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA", "TLS_RSA_WITH_AES_128_CBC_SHA256",
            "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", "TLS_ECDHE_RSA_WITH_RC4_128_SHA", "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        ]

        /// The code points of a comma-separated list of names (TLS 1.3 names are dropped), or why not.
        public static func parse(_ text: String) -> Result<[UInt16], ConfigError> {
            var codes: [UInt16] = []
            var sawAny = false
            for part in text.split(separator: ",", omittingEmptySubsequences: false) {
                let name = part.trimmingWhitespace()
                if name.isEmpty {
                    return .failure(
                        ConfigError("tls_cipher_suites has an empty entry; write names separated by commas")
                    )
                }
                sawAny = true
                if let code = supported[name] {
                    if !codes.contains(code) { codes.append(code) }
                } else if tls13.contains(name) {
                    continue
                } else if withdrawn.contains(name) {
                    return .failure(
                        ConfigError(
                            "tls_cipher_suites: \"\(name)\" is not offered by Coffer's TLS library (no RC4, 3DES or "
                                + "CBC-SHA256 suite is); supported: "
                                + supported.keys.filter { !$0.hasSuffix("POLY1305") }.sorted().joined(separator: ", ")
                        )
                    )
                } else {
                    return .failure(
                        ConfigError(
                            "tls_cipher_suites: \"\(name)\" is not a TLS cipher suite name; use IANA names such as "
                                + "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, separated by commas"
                        )
                    )
                }
            }
            if !sawAny { return .failure(ConfigError("tls_cipher_suites names no cipher suite")) }
            return .success(codes)
        }
    }
}

extension Substring {
    fileprivate func trimmingWhitespace() -> String {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" { s = s.dropLast() }
        return String(s)
    }
}
