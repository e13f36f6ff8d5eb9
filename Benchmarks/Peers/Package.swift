// swift-tools-version: 6.2
import PackageDescription

// The benchmark's peers: the systems swift-uring is measured against, each run in its own
// process by `uring-bench`. A package of its own, so that a user of `import Uring` never fetches
// SwiftNIO. `uring-bench` builds it (release) on first use; `swift build -c release` here does
// the same by hand.
let package = Package(
    name: "swift-uring-peers",
    products: [
        .executable(name: "uring-peers", targets: ["UringPeers"]),
        // Hummingbird 2 with uring-api's endpoints: the HTTP peer of `uring-bench` and of
        // Benchmarks/scripts/http-compare.sh --api.
        .executable(name: "uring-peers-http", targets: ["UringPeersHTTP"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        .executableTarget(
            name: "UringPeers",
            dependencies: [
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Sources/UringPeers",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "UringPeersHTTP",
            dependencies: [.product(name: "Hummingbird", package: "hummingbird")],
            path: "Sources/UringPeersHTTP",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
