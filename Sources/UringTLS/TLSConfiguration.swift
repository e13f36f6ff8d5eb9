import SystemPackage

/// How a TLS endpoint presents itself and what it accepts from its peer.
///
/// ```swift
/// // A server with its certificate chain and key (PEM files), offering HTTP/1.1:
/// var server = TLSConfiguration.server(
///     certificateChain: .file("/etc/ssl/example.pem"), privateKey: .file("/etc/ssl/example.key"))
/// server.applicationProtocols = ["http/1.1"]
///
/// // A client that trusts the system's roots and checks the server's name (the defaults):
/// let client = TLSConfiguration.client()
/// ```
///
/// Defaults: TLS 1.2 at least, TLS 1.3 preferred; a client verifies the server's certificate
/// against the system's trust store and checks the name it connected to; there is no way to
/// accept any certificate silently (trust a given root instead, with ``trustRoots``).
public struct TLSConfiguration: Sendable, Hashable {
    /// PEM data: a file, or bytes already in memory (`.file("cert.pem")`, `.bytes(pem)`).
    ///
    /// A struct rather than an enum: LeakSanitizer cannot follow a pointer kept in a Swift
    /// multi-payload enum (the case's tag sits in the pointer's spare bits), so bytes held by a
    /// cached configuration looked leaked at exit.
    public struct PEM: Sendable, Hashable {
        /// The file to read, for ``file(_:)``.
        public let filePath: FilePath?
        /// The PEM text, for ``bytes(_:)``.
        public let contents: [UInt8]?

        /// PEM read from `path` when the configuration is first used.
        public static func file(_ path: FilePath) -> PEM { PEM(filePath: path, contents: nil) }
        /// PEM text already in memory.
        public static func bytes(_ contents: [UInt8]) -> PEM { PEM(filePath: nil, contents: contents) }
    }

    /// The certificates a peer's chain is verified against.
    public enum TrustRoots: Sendable, Hashable {
        /// The system's store (OpenSSL's default paths: /etc/ssl/certs on Debian).
        case system
        /// These certificates only (PEM, one or more).
        case certificates(PEM)
    }

    /// What a server asks of its clients' certificates.
    public enum ClientCertificates: Sendable, Hashable {
        /// None asked for (the default).
        case none
        /// Asked for, verified when sent; a client without one is accepted.
        case optional
        /// Required and verified.
        case required
    }

    public enum Role: Sendable, Hashable { case client, server }

    /// Client or server.
    public var role: Role
    /// The chain to present, leaf first (PEM); required for a server, optional for a client.
    public var certificateChain: PEM?
    /// The private key of the chain's leaf (PEM, unencrypted).
    public var privateKey: PEM?
    /// The roots a peer's certificate is verified against (a client's server; a server's clients
    /// when ``clientCertificates`` asks for them).
    public var trustRoots: TrustRoots = .system
    /// A client verifies the server's chain and name (default true). Turning it off is for tests
    /// against a throwaway server only; prefer trusting that server's root in ``trustRoots``.
    public var verifiesPeer: Bool = true
    /// Servers only: whether clients must present certificates.
    public var clientCertificates: ClientCertificates = .none
    /// ALPN protocols in order of preference (for example `["h2", "http/1.1"]`); empty: no ALPN.
    public var applicationProtocols: [String] = []
    /// The oldest version accepted (default TLS 1.2).
    public var minimumVersion: TLSVersion = .tlsv12
    /// The newest version offered (default TLS 1.3).
    public var maximumVersion: TLSVersion = .tlsv13
    /// The time a handshake may take, from the first byte exchanged (default 10 s): a slow or
    /// hostile peer is dropped after it with ``TLSError/Code/handshakeTimedOut``.
    public var handshakeTimeout: Duration = .seconds(10)

    public init(role: Role) { self.role = role }

    /// A client configuration: the system's roots, name verification on.
    public static func client(trustRoots: TrustRoots = .system, applicationProtocols: [String] = []) -> Self {
        var configuration = TLSConfiguration(role: .client)
        configuration.trustRoots = trustRoots
        configuration.applicationProtocols = applicationProtocols
        return configuration
    }

    /// A server configuration presenting `certificateChain` with `privateKey`.
    public static func server(certificateChain: PEM, privateKey: PEM, applicationProtocols: [String] = []) -> Self {
        var configuration = TLSConfiguration(role: .server)
        configuration.certificateChain = certificateChain
        configuration.privateKey = privateKey
        configuration.applicationProtocols = applicationProtocols
        return configuration
    }
}

/// A TLS protocol version.
public enum TLSVersion: Int, Sendable, Hashable, Comparable, CustomStringConvertible {
    case tlsv12 = 0x0303
    case tlsv13 = 0x0304

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { self == .tlsv12 ? "TLSv1.2" : "TLSv1.3" }
}
