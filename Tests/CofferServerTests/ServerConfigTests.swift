@testable import CofferServer
import Logging
import Testing

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
              max_connections          = 64
            }
            seal "shamir" {}
            api_addr      = "https://coffer.example.com:8200"
            log_level     = "warn"
            log_format    = "json"
            disable_mlock = true
            """)
        #expect(config.storage == .sqlite(path: "/var/lib/coffer/coffer.db"))
        #expect(config.listener.address == "0.0.0.0:8200" && !config.listener.tlsDisable)
        #expect(config.listener.tlsCertFile == "/etc/coffer/tls.crt" && config.listener.tlsKeyFile == "/etc/coffer/tls.key")
        #expect(config.listener.maxRequestSize == 1_048_576 && config.listener.maxConnections == 64)
        #expect(config.listener.readHeaderTimeout == 5 && config.listener.idleTimeout == 120)
        #expect(config.apiAddr == "https://coffer.example.com:8200")
        #expect(config.logLevel == .warning && config.logFormat == .json)
        try config.validate()
        #expect(try config.listener.hostAndPort() == ("0.0.0.0", 8200))
    }

    @Test func defaultsAreVaultsAndTLSIsRequiredUnlessDisabled() throws {
        let config = try ServerConfig.parse(#"storage "memory" {}"#)
        #expect(config.listener.maxRequestSize == 32 << 20)
        #expect(config.listener.readHeaderTimeout == 10 && config.listener.idleTimeout == 300)
        #expect(throws: ConfigError.self) { try config.validate() }
        let plain = try ServerConfig.parse("listener \"tcp\" {\n  tls_disable = \"true\"\n}")
        try plain.validate()
        #expect(try plain.listener.hostAndPort() == ("127.0.0.1", 8200))
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
        ("storage \"sqlite\" {\n  path = \"/x.db\"\n  cache_size = 10\n}", 3, "unknown key \"cache_size\" in storage \"sqlite\""),
        ("listener \"tcp\" {}\nui = true", 2, "unknown key \"ui\" in the configuration"),
        ("storage \"raft\" {\n  path = \"/x\"\n}", 1, "unknown storage type \"raft\""),
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
