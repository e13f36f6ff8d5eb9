import Uring

/// Why a TLS operation failed: a distinct code per kind of failure, OpenSSL's reason string,
/// and the transport's error when the connection underneath failed.
///
/// ```swift
/// do {
///     let connection = try await TLSConnection.connect(to: address, serverName: "example.com")
/// } catch let error where error.code == .certificateVerificationFailed {
///     print("untrusted server: \(error.reason)")  // e.g. "certificate verify failed"
/// }
/// ```
///
/// Key material never appears in an error.
public struct TLSError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// The configuration cannot be used: a certificate or key that does not load or does not
        /// match, an empty ALPN name, a version range that is empty.
        case invalidConfiguration
        /// The handshake failed: no shared version or cipher, an alert from the peer, bytes that
        /// are not TLS (a client sending garbage instead of a ClientHello).
        case handshakeFailed
        /// The peer's certificate did not verify: untrusted, expired, or not for the name asked
        /// for (``TLSError/verification`` says which).
        case certificateVerificationFailed
        /// The handshake outlasted ``TLSConfiguration/handshakeTimeout``.
        case handshakeTimedOut
        /// The peer closed the TCP connection without a TLS close_notify: the data may have been
        /// cut short by an attacker or a crash, so it is not reported as a clean end.
        case truncated
        /// A record that does not decrypt or parse after the handshake, or an alert from the peer.
        case protocolError
        /// The connection underneath failed (``TLSError/transport`` has the error).
        case transport
        /// The connection was closed (by ``TLSConnection/close()``) or shut down for writing.
        case closed
    }

    public var code: Code
    /// OpenSSL's reason ("certificate verify failed", "wrong version number", …), or a sentence of
    /// ours when the failure is not OpenSSL's.
    public var reason: String
    /// For ``Code/certificateVerificationFailed``: OpenSSL's verification result ("self-signed
    /// certificate", "hostname mismatch", …).
    public var verification: String?
    /// For ``Code/transport`` (and a handshake timeout): the connection's error.
    public var transport: IOError?

    public init(_ code: Code, reason: String, verification: String? = nil, transport: IOError? = nil) {
        self.code = code
        self.reason = reason
        self.verification = verification
        self.transport = transport
    }

    public var description: String {
        var text = "TLS \(code): \(reason)"
        if let verification { text += " (\(verification))" }
        if let transport { text += " [\(transport)]" }
        return text
    }
}
