import COpenSSL
import Glibc
import Testing

@testable import Uring
@testable import UringTLS

extension IntegrationTests {
    /// The engine's memory functions for OpenSSL (`TLSMemory`): small blocks come back from the
    /// freeing thread's cache, every size keeps its bytes across `realloc`, and blocks may be freed
    /// on any thread. Driven through OpenSSL's own `CRYPTO_malloc`/`CRYPTO_free`, as OpenSSL calls
    /// them. (No kernel; serialized with the kernel suites, because the TLS suite counts OpenSSL's
    /// live blocks. The sanitizer passes run it too, and check for leaks.)
    @Suite("TLS memory")
    struct TLSMemoryTests {
        /// Installed, unless `SWIFT_URING_TLS_MEMORY=system` asks for OpenSSL's own functions.
        static var pooled: Bool { TLSMemory.installed }

        @Test func theFunctionsAreInstalledUnlessTheEnvironmentSaysSystem() throws {
            _ = try TLSContext(.client())
            #expect(TLSMemory.installed == (getenv("SWIFT_URING_TLS_MEMORY").map { String(cString: $0) } != "system"))
        }

        /// A freed 40-byte block (OpenSSL's per-record `WPACKET` size) is the next block of its class
        /// on the same thread, zeroed when asked with `CRYPTO_zalloc`.
        @Test(.enabled(if: pooled)) func aFreedSmallBlockIsReusedAndZeroedOnRequest() throws {
            let first = try #require(CRYPTO_malloc(40, nil, 0))
            first.initializeMemory(as: UInt8.self, repeating: 0xAB, count: 40)
            CRYPTO_free(first, nil, 0)
            let second = try #require(CRYPTO_zalloc(56, nil, 0))
            #expect(second == first, "the cached block came back")
            #expect(UnsafeRawBufferPointer(start: second, count: 56).allSatisfy { $0 == 0 }, "zeroed")
            let larger = try #require(CRYPTO_malloc(200, nil, 0))
            #expect(larger != first, "another class, another block")
            CRYPTO_free(larger, nil, 0)
            CRYPTO_free(second, nil, 0)
        }

        /// `realloc` keeps the bytes written so far, growing through every class into a large block
        /// and shrinking back; a zero size frees, and a nil block allocates.
        @Test func reallocKeepsTheBytesAcrossClasses() throws {
            var block = try #require(CRYPTO_realloc(nil, 24, nil, 0))
            var written = 24
            for index in 0..<written { block.storeBytes(of: UInt8(index & 0xFF), toByteOffset: index, as: UInt8.self) }
            for size in [60, 100, 300, 500, 5000, 100_000, 700, 40] {
                block = try #require(CRYPTO_realloc(block, size, nil, 0))
                let kept = min(written, size)
                let bytes = UnsafeRawBufferPointer(start: block, count: kept)
                #expect(
                    bytes.indices.allSatisfy { bytes[$0] == UInt8($0 & 0xFF) }, "the first \(kept) bytes after \(size)")
                for index in kept..<size {
                    block.storeBytes(of: UInt8(index & 0xFF), toByteOffset: index, as: UInt8.self)
                }
                written = size
            }
            #expect(CRYPTO_realloc(block, 0, nil, 0) == nil, "a zero size frees")
            #expect(CRYPTO_malloc(0, nil, 0) == nil)
        }

        /// A thread keeps at most `cacheLimit` blocks per class: of 300 freed, the next 300
        /// allocations on the same thread take at least the cached 256 back.
        @Test(.enabled(if: pooled)) func aThreadKeepsABoundedCache() throws {
            var blocks: [UnsafeMutableRawPointer] = []
            for _ in 0..<300 { blocks.append(try #require(CRYPTO_malloc(100, nil, 0))) }
            let freed = Set(blocks)
            for block in blocks { CRYPTO_free(block, nil, 0) }
            blocks.removeAll()
            for _ in 0..<300 { blocks.append(try #require(CRYPTO_malloc(100, nil, 0))) }
            #expect(blocks.filter { freed.contains($0) }.count >= TLSMemory.cacheLimit)
            for block in blocks { CRYPTO_free(block, nil, 0) }
        }

        /// OpenSSL's record buffers (17–19 KiB; OpenSSL frees them whenever a session is idle) and
        /// the transport's output buffers come back from the thread's cache like small blocks, so
        /// one session after another on a thread copies through the same warm memory; a thread
        /// keeps at most `bufferCacheLimit` of them, and sizes between the classes are not cached.
        @Test(.enabled(if: pooled)) func recordAndOutputBuffersAreReusedWithinABound() throws {
            for (size, sizeClass) in [(17_000, 4), (18_800, 4), (TLSTransport.outputCapacity, 5)] {
                let first = try #require(CRYPTO_malloc(size, nil, 0))
                #expect(TLSMemory.sizeClass(ofBlock: first) == sizeClass, "\(size) bytes: a cached class")
                CRYPTO_free(first, nil, 0)
                let second = try #require(CRYPTO_malloc(size, nil, 0))
                #expect(second == first, "\(size) bytes: the cached buffer came back")
                CRYPTO_free(second, nil, 0)
            }
            for size in [4_000, 16_384, 40_000, 100_000] {
                let block = try #require(CRYPTO_malloc(size, nil, 0))
                #expect(TLSMemory.sizeClass(ofBlock: block) == TLSMemory.large, "\(size) bytes: no class, malloc")
                CRYPTO_free(block, nil, 0)
            }
            var blocks: [UnsafeMutableRawPointer] = []
            for _ in 0..<(TLSMemory.bufferCacheLimit + 20) {
                blocks.append(try #require(CRYPTO_malloc(18_000, nil, 0)))
            }
            let freed = Set(blocks)
            for block in blocks { CRYPTO_free(block, nil, 0) }
            blocks.removeAll()
            for _ in 0..<(TLSMemory.bufferCacheLimit + 20) {
                blocks.append(try #require(CRYPTO_malloc(18_000, nil, 0)))
            }
            #expect(blocks.filter { freed.contains($0) }.count >= TLSMemory.bufferCacheLimit)
            for block in blocks { CRYPTO_free(block, nil, 0) }
        }

        /// Blocks allocated on one thread and freed on others, while those threads allocate too, and
        /// then the threads end (their caches are freed: the leak checker of the sanitizer pass
        /// sees every block either cached, reachable, or returned).
        @Test func blocksMoveBetweenThreadsThatEnd() throws {
            var blocks: [UnsafeMutableRawPointer] = []
            for index in 0..<4000 { blocks.append(try #require(CRYPTO_malloc(16 + index % 600, nil, 0))) }
            let shared = blocks.map { UInt(bitPattern: $0) }
            let threads = 4
            var ids = [pthread_t](repeating: pthread_t(), count: threads)
            let slices = UnsafeMutablePointer<[UInt]>.allocate(capacity: threads)
            defer { slices.deallocate() }
            for thread in 0..<threads {
                (slices + thread).initialize(to: stride(from: thread, to: shared.count, by: threads).map { shared[$0] })
            }
            for thread in 0..<threads {
                let created = pthread_create(
                    &ids[thread], nil,
                    { argument in
                        let slice = argument!.assumingMemoryBound(to: [UInt].self)
                        for address in slice.pointee {
                            CRYPTO_free(UnsafeMutableRawPointer(bitPattern: address), nil, 0)
                            let own = CRYPTO_malloc(48, nil, 0)
                            CRYPTO_free(own, nil, 0)
                        }
                        return nil
                    }, slices + thread)
                try #require(created == 0)
            }
            for thread in 0..<threads { pthread_join(ids[thread], nil) }
            for thread in 0..<threads { (slices + thread).deinitialize(count: 1) }
        }
    }
}
