// swift-tools-version: 6.2
import PackageDescription

let package = Package(
    name: "swift-uring",
    products: [
        .library(name: "Uring", targets: ["Uring"]),
        .executable(name: "uring-bench", targets: ["UringBench"]),
        .executable(name: "uring-echo", targets: ["UringEcho"]),
        .library(name: "UringHTTP", targets: ["UringHTTP"]),
        .library(name: "UringTLS", targets: ["UringTLS"]),
        .library(name: "UringServiceLifecycle", targets: ["UringServiceLifecycle"]),
        .library(name: "UringMetrics", targets: ["UringMetrics"]),
        .executable(name: "uring-http", targets: ["UringHTTPServer"]),
        .executable(name: "uring-api", targets: ["UringAPI"]),
        .executable(name: "uring-tail", targets: ["UringTail"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.3.0"),
        .package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.0"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        // The only C in the project: liburing's header, plus the macros Swift cannot import.
        .target(
            name: "CLiburing",
            path: "Sources/CLiburing",
            linkerSettings: [.linkedLibrary("uring")]
        ),
        // TLS (issue 16): OpenSSL 3's headers from Debian's libssl-dev, and the macros Swift cannot call.
        .target(
            name: "COpenSSL",
            path: "Sources/COpenSSL",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        // TLS connections and listeners on the ring, in a module of their own so that `import Uring`
        // does not link OpenSSL.
        .target(
            name: "UringTLS",
            dependencies: ["Uring", "COpenSSL", .product(name: "SystemPackage", package: "swift-system")],
            path: "Sources/UringTLS",
            swiftSettings: [
                .swiftLanguageMode(.v6), .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
                .strictMemorySafety(),
            ]
        ),
        .target(
            name: "Uring",
            dependencies: [
                "CLiburing",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Uring",
            swiftSettings: [
                .swiftLanguageMode(.v6),
                // Async functions run on their caller's executor unless marked @concurrent: the
                // I/O fast path must not hop (see Docs/DESIGN.md, "No hops on the fast path").
                .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
                .strictMemorySafety(),
            ]
        ),
        .executableTarget(
            name: "UringBench",
            dependencies: [
                "Uring",
                "UringHTTP",
                "UringTLS",
                "CLiburing",  // <sys/epoll.h>, for the load generator's epoll engine
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
            ],
            path: "Benchmarks/UringBench",
            swiftSettings: [.swiftLanguageMode(.v6), .enableUpcomingFeature("NonisolatedNonsendingByDefault")]
        ),
        .executableTarget(
            name: "UringEcho",
            dependencies: [
                "Uring", .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Examples/EchoServer",
            swiftSettings: [.swiftLanguageMode(.v6), .enableUpcomingFeature("NonisolatedNonsendingByDefault")]
        ),
        // `tail -f` on inotify and a readiness sequence: the readiness API's example.
        .executableTarget(
            name: "UringTail",
            dependencies: ["Uring", .product(name: "SystemPackage", package: "swift-system")],
            path: "Sources/Examples/TailFile",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // swift-service-lifecycle integration, kept apart so the core needs no such dependency.
        .target(
            name: "UringServiceLifecycle",
            dependencies: ["Uring", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            path: "Sources/UringServiceLifecycle",
            swiftSettings: [.swiftLanguageMode(.v6), .strictMemorySafety()]
        ),
        // swift-metrics export of the rings' counters, apart for the same reason.
        .target(
            name: "UringMetrics",
            dependencies: ["Uring", .product(name: "Metrics", package: "swift-metrics")],
            path: "Sources/UringMetrics",
            swiftSettings: [.swiftLanguageMode(.v6), .strictMemorySafety()]
        ),
        // A small, strict HTTP/1.1 static-file server on the runtime (request parser, files, ranges).
        .target(
            name: "UringHTTP",
            dependencies: [
                "Uring", "UringTLS", .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Sources/UringHTTP",
            swiftSettings: [
                .swiftLanguageMode(.v6), .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
                .strictMemorySafety(),
            ]
        ),
        .executableTarget(
            name: "UringHTTPServer",
            dependencies: [
                "Uring", "UringHTTP", "UringTLS", .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Examples/HTTPServer",
            swiftSettings: [.swiftLanguageMode(.v6), .enableUpcomingFeature("NonisolatedNonsendingByDefault")]
        ),
        // The handler API's example: a small JSON API with static files under /files/.
        .executableTarget(
            name: "UringAPI",
            dependencies: [
                "Uring", "UringHTTP", .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Examples/APIServer",
            swiftSettings: [.swiftLanguageMode(.v6), .enableUpcomingFeature("NonisolatedNonsendingByDefault")]
        ),
        // A child process for the test of Uring.run, which must own the process's executors.
        .executableTarget(
            name: "uring-run-check",
            dependencies: ["Uring"],
            path: "Tests/UringRunCheck",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Fuzz targets (issue 6): replay tools in a normal build, libFuzzer binaries when built by
        // Tests/Fuzz/fuzz.sh. Their seed corpora are replayed by the test suite.
        .target(name: "UringFuzzSupport", path: "Tests/Fuzz/Support", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "uring-fuzz-http",
            dependencies: ["UringHTTP", "UringFuzzSupport"],
            path: "Tests/Fuzz/HTTPParser",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "uring-fuzz-chunked",
            dependencies: ["UringHTTP", "UringFuzzSupport"],
            path: "Tests/Fuzz/ChunkedBody",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "uring-fuzz-address",
            dependencies: ["Uring", "UringFuzzSupport"],
            path: "Tests/Fuzz/SocketAddress",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // The documentation's Swift snippets, compiled (issue 11): the DocSnippets plugin turns
        // every ```swift block of README.md and the DocC articles into code of UringDocSnippets,
        // and UringTests runs the client and shutdown examples. Warnings are off there: a snippet
        // shows one step and may leave a value unused.
        .executableTarget(
            name: "doc-snippets",
            path: "Tests/DocSnippets/Generator",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .plugin(
            name: "DocSnippets",
            capability: .buildTool(),
            dependencies: ["doc-snippets"],
            path: "Tests/DocSnippets/Plugin"
        ),
        .target(
            name: "UringDocSnippets",
            dependencies: [
                "Uring", "UringTLS", "UringHTTP", .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Tests/DocSnippets/Compiled",
            swiftSettings: [.swiftLanguageMode(.v6), .unsafeFlags(["-suppress-warnings"])],
            plugins: ["DocSnippets"]
        ),
        // Tests that need no kernel ring: the state machines, the encoding of operations into
        // submission entries, parsers and addresses.
        .testTarget(
            name: "UringUnitTests",
            dependencies: ["Uring", "UringHTTP", "CLiburing"],
            path: "Tests/UringUnitTests",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Tests on the real kernel ring: every public API, cancellation, faults, sockets, groups.
        .testTarget(
            name: "UringTests",
            dependencies: [
                "Uring",
                "UringDocSnippets",
                "uring-run-check",
                "uring-fuzz-http",
                "uring-fuzz-chunked",
                "uring-fuzz-address",
                "UringEcho",
                "UringHTTP",
                "UringHTTPServer",
                "UringAPI",
                "UringServiceLifecycle",
                "UringMetrics",
                "UringTLS",
                "COpenSSL",
                "CLiburing",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Tests/UringTests",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
