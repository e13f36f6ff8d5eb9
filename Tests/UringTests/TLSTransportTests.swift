import Testing

@testable import UringTLS

extension IntegrationTests {
    /// The ciphertext buffers between a session's `SSL` and its connection (`TLSTransport`), as a
    /// value: no OpenSSL and no kernel. (Serialized with the kernel suites, because the TLS suite
    /// counts the engine's live blocks and these tests allocate some.)
    @Suite("TLS transport")
    struct TLSTransportTests {
        static func withTransport(_ body: (inout TLSTransport) throws -> Void) throws {
            let input = try #require(TLSMemory.allocateBlock(TLSTransport.inputCapacity))
            var transport = TLSTransport(input: input)
            defer {
                transport.releaseOutput()
                TLSMemory.releaseBlock(input)
            }
            try body(&transport)
        }

        /// The output buffer exists only while ciphertext waits: taken at the first write, filled
        /// up to its capacity (a write that does not fit is cut, then refused), sent in parts, and
        /// given back when the last byte is consumed.
        @Test func theOutputBufferIsLentOnlyWhileCiphertextWaits() throws {
            try Self.withTransport { transport in
                #expect(transport.output == nil && transport.pendingOutput() == nil)
                let nothing = transport.write(UnsafeRawBufferPointer(start: nil, count: 0))
                #expect(nothing == 0 && transport.output == nil, "no buffer taken for an empty write")
                let record = [UInt8]((0..<16_640).map { UInt8(truncatingIfNeeded: $0 &* 7) })
                var total = 0
                while true {
                    let written = record.withUnsafeBytes { transport.write($0) }
                    let count = try #require(written, "a buffer was allocated")
                    if count == 0 { break }
                    #expect(transport.output != nil)
                    total += count
                }
                #expect(total == TLSTransport.outputCapacity, "filled to the byte, the last record cut")
                let pending = try #require(transport.pendingOutput())
                #expect(pending.count == TLSTransport.outputCapacity)
                #expect(pending[16_640 + 3] == record[3], "records in order, unchanged")
                transport.consumeOutput(1000)
                #expect(transport.pendingOutput()?.count == TLSTransport.outputCapacity - 1000)
                #expect(transport.pendingOutput()?.first == record[1000])
                #expect(transport.output != nil, "still lent while bytes wait")
                transport.consumeOutput(TLSTransport.outputCapacity - 1000)
                #expect(transport.output == nil && transport.pendingOutput() == nil, "given back once sent")
            }
        }

        /// Two sessions on one thread, one after the other, write through the same output buffer
        /// (the thread's cache gives back the block the first just returned), so a ring's sessions
        /// copy through warm memory.
        @Test(.enabled(if: TLSMemory.installed)) func sessionsOnOneThreadShareTheirOutputBuffer() throws {
            let bytes: [UInt8] = Array(repeating: 1, count: 100)
            var first: UnsafeMutableRawPointer?
            try Self.withTransport { transport in
                _ = bytes.withUnsafeBytes { transport.write($0) }
                first = transport.output
                transport.consumeOutput(100)
            }
            try Self.withTransport { transport in
                _ = bytes.withUnsafeBytes { transport.write($0) }
                #expect(transport.output == first)
            }
        }

        /// OpenSSL takes input from the front; received bytes go after the waiting ones, which move
        /// to the front only when the room left is at the end; an empty buffer starts over.
        @Test func inputIsReceivedAfterWhatWaitsAndMovesOnlyWhenItMust() throws {
            try Self.withTransport { transport in
                let first = transport.inputSpace()
                var space = try #require(first)
                #expect(space.count == TLSTransport.inputCapacity)
                for index in 0..<TLSTransport.inputCapacity { space[index] = UInt8(truncatingIfNeeded: index) }
                transport.commitInput(TLSTransport.inputCapacity)
                #expect(transport.inputSpace() == nil, "full")
                var taken = [UInt8](repeating: 0, count: 1000)
                let taking = taken.withUnsafeMutableBytes { transport.read(into: $0) }
                #expect(taking == 1000)
                #expect(taken[999] == UInt8(truncatingIfNeeded: 999))
                let second = transport.inputSpace()
                space = try #require(second)
                #expect(space.count == 1000, "the waiting bytes moved to the front")
                var rest = [UInt8](repeating: 0, count: TLSTransport.inputCapacity)
                let count = rest.withUnsafeMutableBytes { transport.read(into: $0) }
                #expect(count == TLSTransport.inputCapacity - 1000)
                #expect(rest[0] == UInt8(truncatingIfNeeded: 1000), "nothing lost or reordered by the move")
                let none = rest.withUnsafeMutableBytes { transport.read(into: $0) }
                #expect(none == 0, "nothing waits")
                let third = transport.inputSpace()
                #expect(third?.count == TLSTransport.inputCapacity, "empty: starts over")
            }
        }
    }
}
