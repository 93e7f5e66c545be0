import Coffer
import CofferTesting
import Synchronization
import Testing

/// The remote client's parts that need no server (Sources/Coffer/Remote): the env file, the names
/// of its variables, backoff, the cache's TTL and bound, the configuration's errors. The client
/// against a real cofferd and a WebSocket server: bindings/python/tests/test_delivery.py.
@Suite struct RemoteClientTests {
    @Test func envFileParsesCommentsQuotesAndExport() throws {
        let text = """
            # a comment
            APP_PASSWORD=s3cret
              export APP_USER = alice   # trailing comment
            QUOTED="two words # not a comment"
            SINGLE='a\\nb'
            ESCAPED="line\\nnext \\"q\\""
            EMPTY=
            HASH=a#b

            """
        let values = try EnvFile.parse(text)
        #expect(values["APP_PASSWORD"] == "s3cret")
        #expect(values["APP_USER"] == "alice")
        #expect(values["QUOTED"] == "two words # not a comment")
        #expect(values["SINGLE"] == "a\\nb", "single quotes are literal")
        #expect(values["ESCAPED"] == "line\nnext \"q\"")
        #expect(values["EMPTY"] == "")
        #expect(values["HASH"] == "a#b", "a # without a blank before it is part of the value")
        #expect(values.count == 7)
    }

    @Test func envFileErrorsNameTheLineNeverTheValue() {
        let cases: [(String, String)] = [
            ("OK=1\nno equals sign here s3cretvalue\n", "line 2: expected KEY=value"),
            ("OK=1\n\n1BAD=s3cretvalue\n", "line 3: the key is not a variable name"),
            ("A=\"s3cretvalue\n", "line 1: the quoted value is not closed"),
            ("A=\"s3cretvalue\" trailing\n", "line 1: unexpected text after the closing quote"),
        ]
        for (text, expected) in cases {
            do {
                _ = try EnvFile.parse(text, origin: "env file .env")
                Issue.record("\(expected): parsed without an error")
            } catch {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains("env file .env \(expected)"), "\(error.message)")
                #expect(!error.message.contains("s3cretvalue"), "the value must not be in the error")
            }
        }
    }

    @Test func variableNamesFollowThePath() {
        #expect(EnvFile.variablePrefix(for: "secret/data/app") == "APP_")
        #expect(EnvFile.variablePrefix(for: "secret/data/team/db-main") == "TEAM_DB_MAIN_")
        #expect(EnvFile.variablePrefix(for: "kv/app") == "APP_")
        let variables = ["APP_PASSWORD": "p", "APP_USER": "u", "OTHER": "x", "APP_": "empty name"]
        #expect(EnvFile.fields(for: "secret/data/app", in: variables, mapping: nil) == ["password": "p", "user": "u"])
        #expect(
            EnvFile.fields(for: "secret/data/app", in: variables, mapping: ["pw": "OTHER", "missing": "NOPE"])
                == ["pw": "x"],
            "an explicit mapping names exactly the fields"
        )
    }

    @Test func backoffIsCappedExponentialWithFullJitter() {
        var policy = RemoteConfiguration.RetryPolicy()
        policy.initialBackoff = 0.1
        policy.maxBackoff = 1
        policy.jitter = false
        #expect(policy.delay(beforeRetry: 0) == 0.1)
        #expect(policy.delay(beforeRetry: 1) == 0.2)
        #expect(policy.delay(beforeRetry: 3) == 0.8)
        #expect(policy.delay(beforeRetry: 4) == 1, "capped at max_backoff")
        #expect(policy.delay(beforeRetry: 1_000_000) == 1, "a huge retry number neither overflows nor exceeds the cap")
        policy.jitter = true
        #expect(policy.delay(beforeRetry: 2, random: 0) == 0)
        #expect(policy.delay(beforeRetry: 2, random: 0.5) == 0.2)
        for retry in 0..<40 {
            let delay = policy.delay(beforeRetry: retry)
            #expect(delay >= 0 && delay <= min(1, 0.1 * Double(1 << min(retry, 30))))
        }
    }

    @Test func cacheServesFreshThenStaleThenNothing() {
        let cache = SecretCache(maximumBytes: 1 << 20)
        cache.store("secret/data/app", fields: ["password": "p"], version: 3, ttl: 10, maxStale: 5, now: 100)
        guard case .fresh(let entry) = cache.lookup("secret/data/app", now: 109.9) else {
            Issue.record("not fresh within the TTL")
            return
        }
        #expect(entry.fields == ["password": "p"] && entry.version == 3)
        guard case .stale = cache.lookup("secret/data/app", now: 110) else {
            Issue.record("not stale after the TTL")
            return
        }
        guard case .missing = cache.lookup("secret/data/app", now: 115) else {
            Issue.record("still there after TTL + max stale")
            return
        }
        #expect(cache.count == 0 && cache.bytes == 0)
        cache.store("secret/data/none", fields: ["a": "b"], version: nil, ttl: 0, maxStale: 5, now: 100)
        #expect(cache.count == 0, "a TTL of 0 caches nothing")
    }

    @Test func cacheStaysWithinItsBytesAndDropsVersionedReadsWithThePath() {
        let value = JSONValue.string(String(repeating: "x", count: 100))
        let cache = SecretCache(maximumBytes: 500)
        for i in 0..<10 {
            cache.store("secret/data/k\(i)", fields: ["v": value], version: 1, ttl: Double(10 + i), maxStale: 0, now: 0)
            #expect(cache.bytes <= 500)
        }
        #expect(cache.count >= 3 && cache.count < 10)
        guard case .fresh = cache.lookup("secret/data/k9", now: 1) else {
            Issue.record("the newest entry was evicted instead of the one closest to expiry")
            return
        }
        guard case .missing = cache.lookup("secret/data/k0", now: 1) else {
            Issue.record("the entry closest to expiry was kept")
            return
        }
        cache.store("secret/data/k9?version=1", fields: ["v": "a"], version: 1, ttl: 10, maxStale: 0, now: 0)
        #expect(cache.remove("secret/data/k9") == 2)
        let tiny = SecretCache(maximumBytes: 10)
        tiny.store("secret/data/big", fields: ["v": value], version: 1, ttl: 10, maxStale: 0, now: 0)
        #expect(tiny.count == 0, "an entry larger than the bound is not cached")
    }

    @Test func ttlChoosesLongestPrefixThenEnvironmentThenDefault() {
        var policy = RemoteConfiguration.CachePolicy()
        policy.defaultTTL = 300
        policy.ttlByPrefix = ["secret/data/": 60, "secret/data/app/": 5]
        policy.environment = "staging"
        policy.ttlByEnvironment = ["staging": 120, "dev": 0]
        #expect(policy.ttl(for: "secret/data/app/db") == 5)
        #expect(policy.ttl(for: "secret/data/other") == 60)
        #expect(policy.ttl(for: "kv/app") == 120)
        policy.environment = "production"
        #expect(policy.ttl(for: "kv/app") == 300)
    }

    @Test func remoteConfigurationReadsEveryKey() throws {
        let json = """
            {"remote": {"address": "http://127.0.0.1:1", "namespace": "team", "timeout": "2s",
              "auth": {"approle": {"role_id": "r", "secret_id": "s", "mount": "ar"}},
              "cache": {"ttl": 30, "max_stale": "1m", "max_bytes": 4096, "events": false,
                        "prefixes": {"secret/data/app/": "250ms"}, "environment": "dev", "environments": {"dev": 0}},
              "retry": {"attempts": 5, "initial_backoff": 0.01, "max_backoff": "1s", "jitter": false},
              "fallback": {"env_file": null, "environment": false, "mapping": {"secret/data/app": {"pw": "DB_PW"}}}}}
            """
        // env_file null is a type error; without it the document is valid.
        #expect(throws: CofferError.self) { try RemoteConfiguration(json: Array(json.utf8)) }
        let valid = json.replacing(#""env_file": null, "#, with: "")
        let config = try RemoteConfiguration(json: Array(valid.utf8))
        #expect(config.namespace == "team" && config.timeout == 2)
        guard case .appRole(let roleID, let secretID, let mount) = config.auth else {
            Issue.record("not AppRole")
            return
        }
        #expect(roleID == "r" && secretID == "s" && mount == "ar")
        #expect(config.cache.defaultTTL == 30 && config.cache.maxStale == 60 && config.cache.maxBytes == 4096)
        #expect(!config.cache.invalidateOnEvents)
        #expect(config.cache.ttlByPrefix == ["secret/data/app/": 0.25])
        #expect(config.cache.ttl(for: "kv/x") == 0, "the dev environment's TTL")
        #expect(config.retry.attempts == 5 && config.retry.maxBackoff == 1 && !config.retry.jitter)
        #expect(!config.fallback.environment && config.fallback.mapping == ["secret/data/app": ["pw": "DB_PW"]])
    }

    @Test func badRemoteConfigurationsAreNamed() {
        let cases: [(String, String)] = [
            (#"{"remote": {"auth": {"token": "t"}}}"#, "'remote.address' is missing"),
            (#"{"remote": {"address": "ftp://x", "auth": {"token": "t"}}}"#, "remote.address"),
            (#"{"remote": {"address": "http://x:1"}}"#, "'remote.auth' is missing"),
            (#"{"remote": {"address": "http://x:1", "auth": {"token": "t", "jwt": {}}}}"#, "exactly one"),
            (
                #"{"remote": {"address": "http://x:1", "auth": {"token": "t"}, "cache": {"tll": 1}}}"#,
                "'remote.cache.tll'"
            ),
            (
                #"{"remote": {"address": "http://x:1", "auth": {"token": "t"}, "retry": {"attempts": 0}}}"#,
                "remote.retry.attempts"
            ),
            (
                #"{"remote": {"address": "http://x:1", "auth": {"token": "t"}, "cache": {"ttl": -1}}}"#,
                "remote.cache.ttl"
            ),
            (
                #"{"remote": {"address": "http://x:1", "auth": {"token": "t"}, "cache": {"ttl": "5 parsecs"}}}"#,
                "remote.cache.ttl"
            ),
            (
                #"{"remote": {"address": "http://x:1", "auth": {"token": "t"}, "retry": {"initial_backoff": 3, "max_backoff": 1}}}"#,
                "max_backoff is less than",
            ),
            (
                #"{"remote": {"address": "http://x:1", "auth": {"token": "t"}, "fallback": {"env_file": "/nonexistent/.env"}}}"#,
                "",
            ),
        ]
        for (json, expected) in cases.dropLast() {
            do {
                _ = try RemoteConfiguration(json: Array(json.utf8))
                Issue.record("\(json): accepted")
            } catch {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains(expected), "\(error.message)")
            }
        }
        // The env file is read when the client opens: a missing one is an error naming it.
        do {
            _ = try RemoteClient(try RemoteConfiguration(json: Array(cases.last!.0.utf8)))
            Issue.record("a missing env file was accepted")
        } catch {
            #expect(error.message.contains("/nonexistent/.env") && error.code == .invalidArgument)
        }
    }

    @Test func unreachableStoreFallsBackToTheEnvironmentAndRaisesDegraded() throws {
        let port = try freeLoopbackPort()
        var config = RemoteConfiguration(address: "http://127.0.0.1:\(port)", auth: .token("t"))
        config.retry.attempts = 2
        config.retry.initialBackoff = 0.001
        config.retry.maxBackoff = 0.002
        config.cache.invalidateOnEvents = false
        config.fallback.mapping = ["secret/data/svc": ["home": "HOME"]]
        let client = try RemoteClient(config)
        defer { client.close() }
        let events = Mutex<[String]>([])
        client.subscribe { event in events.withLock { $0.append(event.type) } }
        #expect(!client.isDegraded)
        let read = try client.read("secret/data/svc")
        #expect(read.source == .environment && read.degraded && client.isDegraded)
        #expect(read.fields["home"]?.stringValue?.isEmpty == false)
        #expect(events.withLock { $0 } == ["client/degraded"])
        #expect(client.recentEvents().map(\.type) == ["client/degraded"])
        #expect(throws: CofferError.self) { try client.read("secret/data/nothing-maps-here-\(port)") }
        let metrics = client.metrics
        #expect(metrics.fallbacks[.environment] == 1 && metrics.storeFailures == 2 && metrics.retries == 2)
        #expect(metrics.degraded && metrics.reads == 1 && metrics.readErrors == 1)
        #expect(client.metricsText(.prometheus).contains("coffer_client_fallbacks_total{source=\"environment\"} 1"))
    }
}
