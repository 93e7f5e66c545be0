// swift-tools-version:6.1
import PackageDescription

// Coffer: an embeddable secrets engine. The layering is one-directional (see docs/architecture.md):
//   C shims -> CofferCore (values, crypto, barrier, seals, ACL) -> CofferStorage, CofferAudit,
//   CofferFramework -> CofferVault (the pipeline, sys/, auth/token/) and Engines -> Coffer (the Swift
//   API and the wire form) -> CEngine (libcoffer.so) / CofferServer (cofferd) / CofferCLI.
// The library targets use only OpenSSL, SQLite and a PKCS#11 module through system-library shims;
// Swift packages (Hummingbird, swift-nio, swift-log) are for cofferd alone.
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Coffer",
    products: [
        .library(name: "Coffer", targets: ["Coffer"]),
        .executable(name: "coffer-quickstart", targets: ["QuickStart"]),
        .executable(name: "coffer-cli", targets: ["CofferCLI"]),
        .executable(name: "coffer-bench", targets: ["InProcessBench"]),
        .executable(name: "coffer-hsm-quickstart", targets: ["HSMQuickStart"]),
        // libcoffer.so: the C ABI. `make lib` links it with the Swift runtime static, SONAME
        // libcoffer.so.0 and only coffer_* exported (see docs/c-abi.md).
        .library(name: "coffer", type: .dynamic, targets: ["CEngine"]),
        .executable(name: "cofferd", targets: ["cofferd"]),
        // Test tooling: one replicated-storage node per process for the Raft fault campaign.
        .executable(name: "coffer-raft-node", targets: ["RaftNode"]),
    ],
    dependencies: [
        // cofferd only: the HTTP/1.1 server (HummingbirdCore, not the router) and TLS (swift-nio-ssl).
        // Default traits off: no swift-configuration, no full Foundation.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // Already in Hummingbird's graph; named because CofferServer imports them directly.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            path: "Sources/COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        // Nettle's AES-256-GCM: the barrier's decryption of small entries (Sources/CNettle/shim.h).
        .systemLibrary(
            name: "CNettle",
            path: "Sources/CNettle",
            pkgConfig: "nettle",
            providers: [.apt(["nettle-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            path: "Sources/CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // Linux calls and flags Swift's Glibc module does not declare (Sources/CLinux/shim.h).
        .systemLibrary(name: "CLinux", path: "Sources/CLinux"),
        .systemLibrary(
            name: "CPKCS11",
            path: "Sources/CPKCS11",
            providers: [.apt(["libp11-kit-dev"])]
        ),
        .target(
            name: "CofferCore",
            dependencies: ["COpenSSL", "CNettle"],
            swiftSettings: strict
        ),
        // Raft-lite's deterministic core (issue 18): a state machine over messages and ticks with no I/O,
        // threads or clock; the log store, transport and cluster integration go on top. Standard library only.
        .target(
            name: "Raft",
            swiftSettings: strict
        ),
        // Raft-lite's integration with the node (issue 18): the durable log store, the transport and
        // the replicated storage backend (Coffer's Cluster/ ties it to a vault).
        .target(
            name: "CofferRaft",
            dependencies: ["Raft", "CofferCore", "CofferStorage", "CSQLite", "CTLS"],
            swiftSettings: strict
        ),
        .target(
            name: "CofferStorage",
            dependencies: ["CofferCore", "CSQLite"],
            swiftSettings: strict
        ),
        .target(
            name: "CofferAudit",
            dependencies: ["CofferCore", "CLinux"],
            swiftSettings: strict
        ),
        .target(
            name: "CofferFramework",
            dependencies: ["CofferCore"],
            swiftSettings: strict
        ),
        .target(
            name: "CofferVault",
            dependencies: ["CofferCore", "CofferFramework", "CofferAudit", "COpenSSL"],
            swiftSettings: strict
        ),
        .target(
            name: "PKCS11Seal",
            dependencies: ["CofferCore", "CPKCS11"],
            swiftSettings: strict
        ),
        // libpq and libmariadb for the database secrets engine, loaded with dlopen on first use: no
        // build or link dependency on them, and no runtime one for a service that never uses the engine.
        .target(
            name: "CDatabaseDrivers",
            path: "Sources/CDatabaseDrivers",
            linkerSettings: [.linkedLibrary("dl")]
        ),
        // Reading certificates and certificate requests with OpenSSL for the PKI engine (cpki.h).
        .target(
            name: "CPKI",
            path: "Sources/CPKI",
            linkerSettings: [.linkedLibrary("crypto")]
        ),
        // A TLS client over a connected socket (libssl), for the HTTP client of the JWT/OIDC and
        // Kubernetes auth methods (ctls.h).
        .target(
            name: "CTLS",
            path: "Sources/CTLS",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        .target(
            name: "Engines",
            dependencies: ["CofferCore", "CofferFramework", "COpenSSL", "CDatabaseDrivers", "CPKI", "CTLS"],
            swiftSettings: strict
        ),
        .target(
            name: "Coffer",
            dependencies: [
                "CofferCore", "CofferStorage", "CofferAudit", "CofferFramework", "CofferVault", "Engines", "PKCS11Seal",
                "CofferRaft", "Raft",
            ],
            swiftSettings: strict
        ),
        // Test support, not a product: clocks tests move by hand, temporary directories, free ports,
        // the live-OpenBao reference, SoftHSM tokens.
        .target(
            name: "CofferTesting",
            dependencies: ["Coffer", "PKCS11Seal"],
            path: "Tests/Support",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "CofferCLI",
            // Coffer: a local vault file and the remote client for `coffer run`.
            dependencies: ["CofferCore", "CofferAudit", "Coffer"],
            swiftSettings: strict
        ),
        // include/coffer.h as a module, so CEngine's @c @implementation is checked against it.
        .systemLibrary(
            name: "CCoffer",
            path: "Sources/CCoffer"
        ),
        .target(
            name: "CEngine",
            dependencies: ["CCoffer", "Coffer"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "QuickStart",
            dependencies: ["Coffer"],
            path: "Examples/QuickStart",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "InProcessBench",
            dependencies: [
                "Coffer", "CofferFramework", "CofferStorage", "Engines", "COpenSSL", "CSQLite", "CLinux",
                // bench/InProcess/Database.swift: the real PostgreSQL fixture (issue 15).
                "CofferTesting",
            ],
            path: "bench/InProcess",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "HSMQuickStart",
            dependencies: ["Coffer"],
            path: "Examples/HSMQuickStart",
            swiftSettings: strict
        ),
        .testTarget(
            name: "PKCS11SealTests",
            dependencies: [
                "Coffer", "CofferTesting", "CofferCore", "CofferFramework", "CofferStorage", "CofferVault",
                "CofferAudit", "Engines", "PKCS11Seal",
            ],
            swiftSettings: strict
        ),
        // cofferd's configuration file and HTTP request framing: code over text and bytes, without
        // NIO, so that the fuzz harnesses (and their instrumented build) need not compile swift-nio.
        .target(
            name: "CofferServerCore",
            dependencies: ["CofferCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .target(
            name: "CofferServer",
            dependencies: [
                "Coffer",
                "CofferServerCore",
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // `cofferd agent` (`coffer agent`): the local caching proxy with auto-auth, on HummingbirdCore.
        .target(
            name: "CofferAgent",
            dependencies: [
                "Coffer",
                "CofferCore",
                "CofferServerCore",
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "cofferd",
            dependencies: ["CofferServer", "CofferServerCore", "CofferAgent"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CofferCoreTests",
            dependencies: [
                "Coffer", "CofferTesting", "CofferCore", "CofferFramework", "CofferStorage", "CofferVault",
                "CofferAudit", "Engines",
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CofferServerTests",
            dependencies: [
                "CofferServer",
                "CofferServerCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "TransitTests",
            dependencies: [
                "Coffer", "CofferTesting", "CofferCore", "CofferFramework", "CofferStorage", "CofferVault",
                "CofferAudit", "Engines",
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "EnginesTests",
            dependencies: [
                "Coffer", "CofferTesting", "CofferCore", "CofferFramework", "CofferStorage", "CofferVault",
                "CofferAudit", "Engines", "CofferCLI", "CLinux",
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "RaftNode",
            dependencies: ["CofferRaft", "CofferStorage", "CofferCore", "Raft"],
            path: "Tests/RaftNode",
            swiftSettings: strict
        ),
        .testTarget(
            name: "RaftTests",
            dependencies: ["Raft", "CofferRaft", "CofferCore", "CofferStorage"],
            exclude: ["testdata"],
            swiftSettings: strict
        ),
        // Fuzzing (docs/fuzzing.md). The harnesses are plain code that every `swift build` compiles and
        // `swift test` replays the seed corpus through (CofferFuzzTests); `make fuzz` builds CofferFuzz in
        // .build-fuzz with coverage instrumentation and libFuzzer (-D COFFER_LIBFUZZER).
        .systemLibrary(
            name: "CLibFuzzer",
            path: "Tests/Fuzz/CLibFuzzer"
        ),
        .target(
            name: "CofferFuzzHarnesses",
            dependencies: [
                "Coffer", "CofferCore", "CofferFramework", "CofferStorage", "CofferVault", "Engines",
                "CofferServerCore", "CofferRaft", "Raft",
            ],
            path: "Tests/Fuzz/Harnesses",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "CofferFuzz",
            dependencies: ["CofferFuzzHarnesses", "CLibFuzzer"],
            path: "Tests/Fuzz/Driver",
            swiftSettings: strict
        ),
        .testTarget(
            name: "CofferFuzzTests",
            dependencies: ["CofferFuzzHarnesses", "CofferTesting", "Coffer"],
            path: "Tests/Fuzz/CorpusTests",
            swiftSettings: strict
        ),
    ]
)
