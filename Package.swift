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
        .target(
            name: "CofferCore",
            dependencies: ["COpenSSL", "CSQLite"],
            swiftSettings: strict
        ),
        .target(
            name: "Engines",
            dependencies: ["CofferCore"],
            swiftSettings: strict
        ),
        .target(
            name: "Coffer",
            dependencies: ["CofferCore", "Engines"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "QuickStart",
            dependencies: ["Coffer"],
            path: "Examples/QuickStart",
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
            name: "EnginesTests",
            dependencies: ["Coffer", "CofferCore", "Engines"],
            swiftSettings: strict
        ),
    ]
)
