internal import COpenSSL

/// Helpers shared by the engine's types: OpenSSL's error queue and PEM parsing.
enum TLSEngine {
    /// A ``TLSError`` with the reason at the head of OpenSSL's error queue for this thread (the
    /// queue is cleared), or `fallback` when the queue is empty.
    static func error(_ code: TLSError.Code, _ fallback: String) -> TLSError {
        let (packed, reason) = takeError()
        var code = code
        if packed != 0, curing_tls_is_verify_failure(packed) != 0 { code = .certificateVerificationFailed }
        return TLSError(code, reason: reason.isEmpty ? fallback : reason)
    }

    /// The head of OpenSSL's error queue (packed code and reason string); clears the queue.
    static func takeError() -> (UInt, String) {
        var buffer = [CChar](repeating: 0, count: 256)
        let packed = unsafe buffer.withUnsafeMutableBufferPointer {
            // SAFETY: the shim writes at most `count` bytes, NUL-terminated.
            unsafe curing_tls_take_error($0.baseAddress, $0.count)
        }
        let end = buffer.firstIndex(of: 0) ?? buffer.count
        return (packed, String(decoding: buffer[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    /// Every certificate in `pem` (owned: the caller frees each with X509_free).
    static func certificates(inPEM pem: [UInt8]) throws(TLSError) -> [OpaquePointer] {
        _ = TLSMemory.installed  // before OpenSSL's first allocation
        var result: [OpaquePointer] = unsafe []
        unsafe pem.withUnsafeBytes { raw in
            // SAFETY: the memory BIO reads `raw` only inside this closure and is freed in it.
            guard let bio = unsafe BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return }
            defer { unsafe BIO_free(bio) }
            while let certificate = unsafe PEM_read_bio_X509(bio, nil, nil, nil) { unsafe result.append(certificate) }
        }
        _ = takeError()  // the read that ended the loop leaves "no start line" behind
        return unsafe result
    }

    /// Frees certificates that ``certificates(inPEM:)`` returned.
    static func free(_ certificates: [OpaquePointer]) {
        for index in unsafe certificates.indices { unsafe X509_free(certificates[index]) }
    }
}

extension TLSConfiguration {
    /// A new P-256 key and a self-signed certificate for it, as PEM: a throwaway identity for
    /// tests, benchmarks and development servers (a client trusts it by putting the certificate
    /// in its ``trustRoots``). Never for production: nothing vouches for it.
    ///
    /// ```swift
    /// let identity = try TLSConfiguration.selfSignedIdentity(names: ["localhost", "127.0.0.1"])
    /// let server = TLSConfiguration.server(certificateChain: identity.certificate, privateKey: identity.privateKey)
    /// let client = TLSConfiguration.client(trustRoots: .certificates(identity.certificate))
    /// ```
    ///
    /// - Parameters:
    ///   - names: DNS names and IP addresses the certificate is valid for (the first is also its
    ///     common name).
    ///   - days: How long it is valid.
    public static func selfSignedIdentity(names: [String], days: Int = 30) throws(TLSError) -> (
        certificate: PEM, privateKey: PEM
    ) {
        guard let first = names.first, days > 0 else {
            throw TLSError(.invalidConfiguration, reason: "a self-signed identity needs a name and a validity")
        }
        _ = TLSMemory.installed  // before OpenSSL's first allocation
        let alternatives = names.map { TLSSession.isIPAddress($0) ? "IP:\($0)" : "DNS:\($0)" }.joined(separator: ",")
        var certificate: UnsafeMutablePointer<CChar>?
        var certificateLength = 0
        var key: UnsafeMutablePointer<CChar>?
        var keyLength = 0
        guard
            unsafe curing_tls_self_signed(
                first, alternatives, Int32(days), &certificate, &certificateLength, &key, &keyLength) == 1,
            let certificate = unsafe certificate, let key = unsafe key
        else {
            throw TLSEngine.error(.invalidConfiguration, "cannot make a self-signed certificate")
        }
        defer {
            unsafe curing_tls_free(certificate)
            unsafe curing_tls_free(key)
        }
        // SAFETY: the shim returned buffers of exactly these lengths; they are freed after the copies.
        let certificateBytes = unsafe Array(UnsafeRawBufferPointer(start: certificate, count: certificateLength))
        let keyBytes = unsafe Array(UnsafeRawBufferPointer(start: key, count: keyLength))
        return (.bytes(certificateBytes), .bytes(keyBytes))
    }
}
