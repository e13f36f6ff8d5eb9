// swift-tools-version: 6.2
import PackageDescription

// The benchmark's peers: the systems swift-uring is measured against, each run in its own
// process by `uring-bench`. A package of its own, so that a user of `import Uring` never fetches
// SwiftNIO. `uring-bench` builds it (release) on first use; `swift build -c release` here does
// the same by hand.
let package = Package(
    name: "swift-uring-peers",
    products: [.executable(name: "uring-peers", targets: ["UringPeers"])],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        .executableTarget(
            name: "UringPeers",
            dependencies: [
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Sources/UringPeers",
            swiftSettings: [.swiftLanguageMode(.v6)]
        )
    ]
)
