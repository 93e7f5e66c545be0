import Logging
import Testing

@testable import CofferServer
@testable import CofferServerCore

@Suite struct ServerConfigTests {
    @Test func readsAVaultStyleFile() throws {
        let config = try ServerConfig.parse(
            """
            # production
            storage "sqlite" {
              path = "/var/lib/coffer/coffer.db"
            }
            listener "tcp" {
              address                  = "0.0.0.0:8200"
              tls_cert_file            = "/etc/coffer/tls.crt"
              tls_key_file             = "/etc/coffer/tls.key"
              max_request_size         = 1048576
              http_read_header_timeout = "5s"
              http_idle_timeout        = "2m"
              http_read_timeout        = "45s"
              max_connections          = 64
              max_connections_per_address = 8
              tls_min_version          = "tls13"
              tls_cipher_suites        = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"
              tls_require_and_verify_client_cert = true
              tls_client_ca_file       = "/etc/coffer/clients-ca.pem"
            }
            seal "shamir" {}
            api_addr      = "https://coffer.example.com:8200"
            log_level     = "warn"
            log_format    = "json"
            disable_mlock = true
            disable_cache = true
            """
        )
        #expect(config.storage == .sqlite(path: "/var/lib/coffer/coffer.db"))
        #expect(config.listener.address == "0.0.0.0:8200" && !config.listener.tlsDisable)
        #expect(
            config.listener.tlsCertFile == "/etc/coffer/tls.crt" && config.listener.tlsKeyFile == "/etc/coffer/tls.key"
        )
        #expect(config.listener.maxRequestSize == 1_048_576 && config.listener.maxConnections == 64)
        #expect(config.listener.readHeaderTimeout == 5 && config.listener.idleTimeout == 120)
        #expect(config.listener.readTimeout == 45 && config.listener.maxConnectionsPerAddress == 8)
        #expect(config.listener.tlsMinVersion == .tls13 && config.listener.tlsMaxVersion == .tls13)
        #expect(
            config.listener.tlsCipherSuites == [0xC02B, 0xCCA8],
            "TLS 1.3 names change nothing; Go's old ChaCha name is known"
        )
        #expect(
            config.listener.tlsRequireAndVerifyClientCert
                && config.listener.tlsClientCAFile == "/etc/coffer/clients-ca.pem"
        )
        #expect(config.apiAddr == "https://coffer.example.com:8200")
        #expect(config.logLevel == .warning && config.logFormat == .json)
        #expect(config.disableCache)
        try config.validate()
        #expect(try config.listener.hostAndPort() == ("0.0.0.0", 8200))
    }

    @Test func defaultsAreVaultsAndTLSIsRequiredUnlessDisabled() throws {
        let config = try ServerConfig.parse(#"storage "memory" {}"#)
        #expect(!config.disableCache)
        #expect(config.listener.maxRequestSize == 32 << 20)
        #expect(config.listener.readHeaderTimeout == 10 && config.listener.idleTimeout == 300)
        #expect(config.listener.readTimeout == 30 && config.listener.maxConnectionsPerAddress == 128)
        #expect(config.listener.tlsMinVersion == .tls12 && config.listener.tlsMaxVersion == .tls13)
        #expect(config.listener.tlsCipherSuites == nil && !config.listener.tlsRequireAndVerifyClientCert)
        #expect(throws: ConfigError.self) { try config.validate() }
        let plain = try ServerConfig.parse("listener \"tcp\" {\n  tls_disable = \"true\"\n}")
        try plain.validate()
        #expect(try plain.listener.hostAndPort() == ("127.0.0.1", 8200))
    }

    @Test func configurationsBuiltInCodeAreCheckedToo() throws {
        var config = ServerConfig()
        config.listener.tlsDisable = true
        try config.validate()
        config.listener.readTimeout = Int64.max / 2  // would overflow NIO's nanosecond timer
        #expect(throws: ConfigError("http_read_timeout must be from 1s to 8760h (a year)")) { try config.validate() }
        config.listener.readTimeout = 30
        config.listener.maxConnectionsPerAddress = 0
        #expect(throws: ConfigError("max_connections_per_address must be a positive whole number")) {
            try config.validate()
        }
        config.listener.maxConnectionsPerAddress = 1
        config.listener.tlsMinVersion = .tls13
        config.listener.tlsMaxVersion = .tls12
        #expect(throws: ConfigError("tls_min_version \"tls13\" is newer than tls_max_version \"tls12\"")) {
            try config.validate()
        }
    }

    @Test func environmentOverridesTheFileAndBaoWinsOverVault() throws {
        var config = try ServerConfig.parse("log_level = \"info\"\napi_addr = \"http://file:8200\"")
        try config.applyEnvironment([
            "VAULT_API_ADDR": "http://vault:8200", "BAO_API_ADDR": "http://bao:8200", "VAULT_LOG_LEVEL": "trace",
        ])
        #expect(config.apiAddr == "http://bao:8200" && config.logLevel == .trace)
        #expect(throws: ConfigError("log_level \"loud\" is not one of trace, debug, info, warn, error")) {
            try config.applyEnvironment(["BAO_LOG_LEVEL": "loud"])
        }
    }

    @Test(arguments: [
        (
            "storage \"sqlite\" {\n  path = \"/x.db\"\n  cache_size = 10\n}", 3,
            "unknown key \"cache_size\" in storage \"sqlite\""
        ),
        ("listener \"tcp\" {}\nui = true", 2, "unknown key \"ui\" in the configuration"),
        ("storage \"raft\" {\n  path = \"/x\"\n}", 1, "storage \"raft\" needs path = \"/var/lib/coffer\" and node_id"),
        ("storage \"zookeeper\" {\n  path = \"/x\"\n}", 1, "unknown storage type \"zookeeper\""),
        ("listener \"unix\" {}", 1, "unknown listener type \"unix\""),
        ("seal \"pkcs11\" {\n  slot = [\"0\"]\n}", 2, "\"slot\" must be a string, number or boolean"),
        ("seal \"hsm\" {}", 1, "unknown seal type \"hsm\"; Coffer has \"shamir\" and \"pkcs11\""),
        ("seal \"awskms\" {}", 1, "unknown seal type \"awskms\""),
        ("listener \"tcp\" {\n  max_request_size = -1\n}", 2, "\"max_request_size\" must be a positive whole number"),
        ("listener \"tcp\" {\n  http_idle_timeout = \"soon\"\n}", 2, "must be a duration"),
        ("log_level = 3", 1, "\"log_level\" must be a string, not a number"),
        ("storage \"memory\" {}\nstorage \"memory\" {}", 2, "\"storage\" is given twice (first at line 1)"),
        ("storage = \"memory\"", 1, "\"storage\" is a block"),
        ("storage \"sqlite\" {\n  path = \"x\"\n", 3, "missing '}'"),
        ("storage \"sqlite\" {}", 1, "storage \"sqlite\" needs path"),
        (
            "listener \"tcp\" {\n  tls_min_version = \"tls1.2\"\n}", 2,
            "\"tls_min_version\" must be one of \"tls10\", \"tls11\", \"tls12\", \"tls13\""
        ),
        ("listener \"tcp\" {\n  tls_max_version = 12\n}", 2, "\"tls_max_version\" must be one of"),
        (
            "listener \"tcp\" {\n  tls_min_version = \"tls13\"\n  tls_max_version = \"tls12\"\n}", 3,
            "tls_min_version \"tls13\" is newer than tls_max_version \"tls12\""
        ),
        (
            "listener \"tcp\" {\n\n  tls_cipher_suites = \"TLS_RSA_WITH_RC4_128_SHA\"\n}", 3,
            "\"TLS_RSA_WITH_RC4_128_SHA\" is not offered by Coffer's TLS library"
        ),
        (
            "listener \"tcp\" {\n  tls_cipher_suites = \"ECDHE-RSA-AES128-GCM-SHA256\"\n}", 2,
            "is not a TLS cipher suite name; use IANA names"
        ),
        (
            "listener \"tcp\" {\n  tls_cipher_suites = \"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,\"\n}", 2,
            "tls_cipher_suites has an empty entry"
        ),
        ("listener \"tcp\" {\n  tls_cipher_suites = \"TLS_AES_128_GCM_SHA256\"\n}", 2, "names only TLS 1.3 suites"),
        ("listener \"tcp\" {\n  tls_require_and_verify_client_cert = true\n}", 2, "needs tls_client_ca_file"),
        (
            "listener \"tcp\" {\n  tls_client_ca_file = \"/ca.pem\"\n}", 2,
            "tls_client_ca_file is used only with tls_require_and_verify_client_cert"
        ),
        (
            "listener \"tcp\" {\n  tls_client_ca_file = \"/ca.pem\"\n  tls_require_and_verify_client_cert = true\n  tls_disable_client_certs = true\n}",
            4,
            "cannot both be true"
        ),
        ("listener \"tcp\" {\n  http_read_timeout = \"0s\"\n}", 2, "\"http_read_timeout\" must be a duration"),
        ("listener \"tcp\" {\n  http_read_timeout = \"9000h\"\n}", 2, "\"http_read_timeout\" must be at most 8760h"),
        (
            "listener \"tcp\" {\n  max_connections_per_address = 0\n}", 2,
            "\"max_connections_per_address\" must be a positive whole number"
        ),
        (
            "listener \"tcp\" {\n  address = \"127.0.0.1:1\"\n  address = \"127.0.0.1:2\"\n}", 3,
            "\"address\" is given twice in listener \"tcp\" (first at line 2)"
        ),
        (
            "listener \"tcp\" {\n  tls_prefer_server_cipher_suites = true\n}", 2,
            "unknown key \"tls_prefer_server_cipher_suites\""
        ),
    ])
    func mistakesAreErrorsWithTheirLine(text: String, line: Int, message: String) {
        do {
            _ = try ServerConfig.parse(text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.line == line, "\(error)")
            #expect(error.message.contains(message), "\(error)")
        }
    }
}
