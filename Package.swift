// swift-tools-version:6.1
import PackageDescription

// Coffer: an embeddable secrets engine. The layering is one-directional (see docs/architecture.md):
// C shims -> CofferCore -> Engines -> Coffer (the Swift API) -> CEngine / CofferServer.
// No third-party Swift dependencies yet: the core builds on OpenSSL and SQLite through system-library
// shims, so a debug build stays fast on a 2-core machine.
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
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            path: "Sources/COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            path: "Sources/CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .systemLibrary(
            name: "CPKCS11",
            path: "Sources/CPKCS11",
            providers: [.apt(["libp11-kit-dev"])]
        ),
        .target(
            name: "CofferCore",
            dependencies: ["COpenSSL", "CSQLite"],
            swiftSettings: strict
        ),
        .target(
            name: "PKCS11Seal",
            dependencies: ["CofferCore", "CPKCS11"],
            swiftSettings: strict
        ),
        .target(
            name: "Engines",
            dependencies: ["CofferCore", "COpenSSL"],
            swiftSettings: strict
        ),
        .target(
            name: "Coffer",
            dependencies: ["CofferCore", "Engines", "PKCS11Seal"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "CofferCLI",
            dependencies: ["CofferCore"],
            swiftSettings: strict
        ),
        // include/coffer.h as a module, so CEngine's @c @implementation is checked against it.
        .systemLibrary(
            name: "CCoffer",
            path: "Sources/CCoffer"
        ),
        .target(
            name: "CEngine",
            dependencies: ["CCoffer", "Coffer", "Engines"],
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
            dependencies: ["Coffer", "Engines", "COpenSSL", "CSQLite"],
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
            dependencies: ["Coffer", "CofferCore", "PKCS11Seal"],
            swiftSettings: strict
        ),
        .target(
            name: "CofferServer",
            dependencies: [
                "Coffer",
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "cofferd",
            dependencies: ["CofferServer"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CofferCoreTests",
            dependencies: ["CofferCore"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CofferServerTests",
            dependencies: [
                "CofferServer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "TransitTests",
            dependencies: ["Coffer", "CofferCore", "Engines"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "EnginesTests",
            dependencies: ["Coffer", "CofferCore", "Engines", "CofferCLI"],
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
            dependencies: ["CofferCore", "Engines", "CofferServer"],
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
            dependencies: ["CofferFuzzHarnesses", "Coffer"],
            path: "Tests/Fuzz/CorpusTests",
            swiftSettings: strict
        ),
    ]
)
