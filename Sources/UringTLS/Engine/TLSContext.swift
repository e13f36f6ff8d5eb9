internal import COpenSSL
import Glibc
import SystemPackage

/// An OpenSSL `SSL_CTX` built once from a ``TLSConfiguration``: certificates, key, trust store,
/// versions, ALPN. Shared by every connection made with it (OpenSSL's contexts are thread-safe
/// once configured).
@safe final class TLSContext: @unchecked Sendable {
    // SAFETY (@safe): `context` is created in init and freed in deinit, after every session made from it (a session
    // holds its context). `serverProtocols` is the ALPN list the server callback reads: allocated in init, freed in
    // deinit after the context.
    // @unchecked Sendable: the context is not changed after init; OpenSSL locks its own shared state.
    let context: OpaquePointer
    let configuration: TLSConfiguration
    /// The client's ALPN list in wire format (length-prefixed names).
    private var serverProtocols: UnsafeMutableRawPointer? = nil

    init(_ configuration: TLSConfiguration) throws(TLSError) {
        _ = TLSMemory.installed  // before OpenSSL's first allocation
        self.configuration = configuration
        let method = configuration.role == .client ? unsafe TLS_client_method() : unsafe TLS_server_method()
        guard let context = unsafe SSL_CTX_new(method) else {
            throw TLSEngine.error(.invalidConfiguration, "cannot create an SSL context")
        }
        unsafe self.context = context
        // From here on deinit frees the context.
        guard configuration.minimumVersion <= configuration.maximumVersion else {
            throw TLSError(.invalidConfiguration, reason: "the minimum TLS version is above the maximum")
        }
        let minimum = configuration.minimumVersion == .tlsv13 ? curing_tls_version_1_3() : curing_tls_version_1_2()
        let maximum = configuration.maximumVersion == .tlsv13 ? curing_tls_version_1_3() : curing_tls_version_1_2()
        guard unsafe curing_tls_set_versions(context, minimum, maximum) == 1 else {
            throw TLSEngine.error(.invalidConfiguration, "cannot set the TLS versions")
        }
        // Partial writes and a buffer that may move between retries (the caller's slices), and no
        // renegotiation (TLS 1.2's, a known attack surface). OpenSSL's record buffers are given
        // back whenever the session is idle (SSL_MODE_RELEASE_BUFFERS): they come from and go to
        // the thread's cache (`TLSMemory`), so a ring's sessions share a few warm ones, with no
        // malloc, where each would otherwise keep 34 KiB of its own, cold when its turn comes.
        _ = unsafe curing_tls_ctx_set_mode(
            context,
            curing_tls_mode_partial_write() | curing_tls_mode_moving_buffer() | curing_tls_mode_release_buffers())
        _ = unsafe SSL_CTX_set_options(context, UInt64(curing_tls_option_no_renegotiation()))

        if let chain = configuration.certificateChain {
            try unsafe Self.useCertificateChain(chain, in: context)
            guard let key = configuration.privateKey else {
                throw TLSError(.invalidConfiguration, reason: "a certificate chain needs its private key")
            }
            try unsafe Self.usePrivateKey(key, in: context)
            guard unsafe SSL_CTX_check_private_key(context) == 1 else {
                throw TLSEngine.error(.invalidConfiguration, "the private key does not match the certificate")
            }
        } else if configuration.role == .server {
            throw TLSError(.invalidConfiguration, reason: "a server needs a certificate chain and a private key")
        }
        // A server that asks for no client certificates verifies nothing: no trust store to load.
        if configuration.role == .client || configuration.clientCertificates != .none {
            try unsafe Self.useTrustRoots(configuration.trustRoots, in: context)
        }

        switch configuration.role {
        case .client:
            let mode = configuration.verifiesPeer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE
            unsafe SSL_CTX_set_verify(context, mode, nil)
        case .server:
            switch configuration.clientCertificates {
            case .none: unsafe SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
            case .optional: unsafe SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
            case .required: unsafe SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
            }
        }

        if !configuration.applicationProtocols.isEmpty {
            var wire: [UInt8] = []
            for name in configuration.applicationProtocols {
                let bytes = Array(name.utf8)
                guard !bytes.isEmpty, bytes.count <= 255 else {
                    throw TLSError(.invalidConfiguration, reason: "an ALPN protocol name must have 1 to 255 bytes")
                }
                wire.append(UInt8(bytes.count))
                wire += bytes
            }
            guard wire.count <= 0xFFFF else {
                throw TLSError(.invalidConfiguration, reason: "the ALPN list is too long")
            }
            switch configuration.role {
            case .client:
                let rc = unsafe wire.withUnsafeBufferPointer {
                    unsafe SSL_CTX_set_alpn_protos(context, $0.baseAddress, UInt32($0.count))
                }
                guard rc == 0 else { throw TLSEngine.error(.invalidConfiguration, "cannot set the ALPN protocols") }
            case .server:
                // Two bytes of length, then the list: read by the C callback for the context's life.
                let storage = UnsafeMutableRawPointer.allocate(byteCount: wire.count + 2, alignment: 1)
                unsafe storage.storeBytes(of: UInt8(wire.count & 0xFF), as: UInt8.self)
                unsafe storage.storeBytes(of: UInt8(wire.count >> 8), toByteOffset: 1, as: UInt8.self)
                unsafe wire.withUnsafeBytes {
                    unsafe (storage + 2).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
                }
                unsafe serverProtocols = unsafe storage
                unsafe curing_tls_set_alpn_server(
                    context, storage.assumingMemoryBound(to: UInt8.self), UInt32(wire.count + 2))
            }
        }
    }

    deinit {
        unsafe SSL_CTX_free(context)
        unsafe serverProtocols?.deallocate()
    }

    private static func useCertificateChain(_ pem: TLSConfiguration.PEM, in context: OpaquePointer) throws(TLSError) {
        if let path = pem.filePath {
            let rc = unsafe path.withPlatformString { unsafe SSL_CTX_use_certificate_chain_file(context, $0) }
            guard rc == 1 else { throw TLSEngine.error(.invalidConfiguration, "cannot load the certificate chain") }
        } else {
            let bytes = pem.contents ?? []
            let certificates = try unsafe TLSEngine.certificates(inPEM: bytes)
            defer { unsafe TLSEngine.free(certificates) }
            guard let leaf = unsafe certificates.first else {
                throw TLSError(.invalidConfiguration, reason: "the certificate chain holds no certificate")
            }
            guard unsafe SSL_CTX_use_certificate(context, leaf) == 1 else {
                throw TLSEngine.error(.invalidConfiguration, "cannot use the certificate")
            }
            for index in unsafe certificates.indices.dropFirst() {
                let certificate = unsafe certificates[index]
                // SSL_CTX_add1_chain_cert (a macro over SSL_CTX_ctrl) takes its own reference.
                guard unsafe SSL_CTX_ctrl(context, SSL_CTRL_CHAIN_CERT, 1, UnsafeMutableRawPointer(certificate)) == 1
                else {
                    throw TLSEngine.error(.invalidConfiguration, "cannot add a chain certificate")
                }
            }
        }
    }

    private static func usePrivateKey(_ pem: TLSConfiguration.PEM, in context: OpaquePointer) throws(TLSError) {
        if let path = pem.filePath {
            let rc = unsafe path.withPlatformString {
                unsafe SSL_CTX_use_PrivateKey_file(context, $0, SSL_FILETYPE_PEM)
            }
            guard rc == 1 else { throw TLSEngine.error(.invalidConfiguration, "cannot load the private key") }
        } else {
            let bytes = pem.contents ?? []
            let key = unsafe bytes.withUnsafeBytes { raw -> OpaquePointer? in
                guard let bio = unsafe BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
                defer { unsafe BIO_free(bio) }
                return unsafe PEM_read_bio_PrivateKey(bio, nil, nil, nil)
            }
            guard let key = unsafe key else {
                throw TLSEngine.error(.invalidConfiguration, "cannot read the private key")
            }
            defer { unsafe EVP_PKEY_free(key) }
            guard unsafe SSL_CTX_use_PrivateKey(context, key) == 1 else {
                throw TLSEngine.error(.invalidConfiguration, "cannot use the private key")
            }
        }
    }

    private static func useTrustRoots(_ roots: TLSConfiguration.TrustRoots, in context: OpaquePointer) throws(TLSError)
    {
        switch roots {
        case .system:
            guard unsafe SSL_CTX_set_default_verify_paths(context) == 1 else {
                throw TLSEngine.error(.invalidConfiguration, "cannot load the system's trust store")
            }
        case .certificates(let pem) where pem.filePath != nil:
            let rc = unsafe pem.filePath!.withPlatformString {
                unsafe SSL_CTX_load_verify_locations(context, $0, nil)
            }
            guard rc == 1 else { throw TLSEngine.error(.invalidConfiguration, "cannot load the trust roots") }
        case .certificates(let pem):
            let bytes = pem.contents ?? []
            let certificates = try unsafe TLSEngine.certificates(inPEM: bytes)
            defer { unsafe TLSEngine.free(certificates) }
            guard unsafe !certificates.isEmpty else {
                throw TLSError(.invalidConfiguration, reason: "the trust roots hold no certificate")
            }
            let store = unsafe SSL_CTX_get_cert_store(context)
            for index in unsafe certificates.indices where unsafe X509_STORE_add_cert(store, certificates[index]) != 1 {
                throw TLSEngine.error(.invalidConfiguration, "cannot add a trust root")
            }
        }
    }
}
