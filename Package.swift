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
        .executable(name: "coffer", targets: ["CofferCLI"]),
        .executable(name: "coffer-bench", targets: ["InProcessBench"]),
        .executable(name: "coffer-hsm-quickstart", targets: ["HSMQuickStart"]),
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
            pkgConfig: "p11-kit-1",
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
        .executableTarget(
            name: "QuickStart",
            dependencies: ["Coffer"],
            path: "Examples/QuickStart",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "InProcessBench",
            dependencies: ["Coffer", "Engines", "COpenSSL"],
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
        .testTarget(
            name: "CofferCoreTests",
            dependencies: ["CofferCore"],
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
    ]
)
