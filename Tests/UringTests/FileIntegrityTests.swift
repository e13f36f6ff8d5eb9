import Glibc
import SystemPackage
import Testing

@testable import Uring

extension IntegrationTests {
    @Suite("File integrity")
    struct FileIntegrity {
        /// 64 MiB of random data written with mixed block sizes, read back in random order by one
        /// task (one read in flight: page-cache reads made without waiting) and by 64 concurrent
        /// tasks (reads batched through the ring): identical bytes.
        @Test(arguments: [1, 64])
        func sixtyFourMebibytesRoundTrip(readers: Int) async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let size = 64 << 20
            var random = SeededRandom(seed: 0x5EED)
            let data = random.bytes(size)
            let fdsBefore = openDescriptorCount()

            let file = try await File.open(dir.file("big"), .readWrite, options: [.create, .truncate])
            // Mixed block sizes: 1 B up to 1 MiB, odd sizes included.
            let blockSizes = [1, 7, 512, 4096, 4099, 65_536, 131_071, 1 << 20]
            var offset = 0
            var k = 0
            while offset < size {
                let length = min(blockSizes[k % blockSizes.count], size - offset)
                try await file.write(contentsOf: Array(data[offset..<offset + length]), at: Int64(offset))
                offset += length
                k += 1
            }
            try await file.sync()
            #expect(try await file.status().size == Int64(size))

            // `readers` tasks read 256 KiB pieces in a shuffled order, each into its own buffer.
            let piece = 256 << 10
            var order = Array(0..<(size / piece))
            order.shuffle(using: &random)
            let chunks = order
            let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
                for worker in 0..<readers {
                    group.addTask {
                        var bad = 0
                        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: piece, alignment: 16)
                        defer { buffer.deallocate() }
                        for index in stride(from: worker, to: chunks.count, by: readers) {
                            let at = chunks[index] * piece
                            try await file.read(exactlyInto: buffer, at: Int64(at))
                            if !data[at..<at + piece].elementsEqual(buffer) { bad += 1 }
                        }
                        return bad
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(mismatches == 0)
            try await file.close()
            #expect(openDescriptorCount() == fdsBefore)
        }

        /// 100,000 concurrent reads through a ring of 8 entries all complete correctly.
        @Test func hundredThousandReadsThroughEightEntries() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let count = 100_000
            // Each 8-byte word holds its own index.
            var words = [UInt64](repeating: 0, count: count)
            for i in 0..<count { words[i] = UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }
            let bytes = words.withUnsafeBytes { Array($0) }
            let path = dir.file("words")
            let writer = try await File.open(path, .writeOnly, options: [.create, .truncate])
            try await writer.write(contentsOf: bytes, at: 0)
            try await writer.close()

            let ring = try RingExecutor(entries: 8, name: "ring-of-8")
            defer { ring.shutdown() }
            let file = try await File.open(path)
            let wrong = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<count {
                    group.addTask(executorPreference: ring) {
                        var value: UInt64 = 0
                        let n = try await withUnsafeMutableBytes(of: &value) { buffer in
                            // The buffer is a local of this task; it stays put while we await.
                            try await file.read(into: buffer, at: Int64(i * 8))
                        }
                        return (n == 8 && value == UInt64(i) &* 0x9E37_79B9_7F4A_7C15) ? 0 : 1
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(wrong == 0)
            let stats = await ring.statistics()
            #expect(stats.submissionEntries == 8)
            // Every read was submitted, or made at once from the page cache when nothing else was
            // ready on the ring ("reads without waiting": not submitted, counted apart).
            #expect(stats.submitted + stats.readsWithoutWaiting >= UInt64(count))
            #expect(stats.waitedForCapacity > 0, "most reads must have queued in user space")
            #expect(stats.operationsInTable == 0)
            #expect(stats.strayCompletions == 0)
            try await file.close()
        }
    }
}

/// `withUnsafeMutableBytes(of:)` for async bodies: the value lives in the caller's frame.
func withUnsafeMutableBytes<T, R>(
    of value: inout T, _ body: (UnsafeMutableRawBufferPointer) async throws -> R
) async rethrows -> R {
    let buffer = UnsafeMutableRawBufferPointer.allocate(
        byteCount: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment)
    defer { buffer.deallocate() }
    withUnsafeBytes(of: &value) { buffer.copyMemory(from: $0) }
    let result = try await body(buffer)
    value = buffer.load(as: T.self)
    return result
}
