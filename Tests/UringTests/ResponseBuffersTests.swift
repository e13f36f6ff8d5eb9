import Testing

@testable import UringHTTP

/// The response buffers sessions borrow while they answer (`ResponseBuffers`): no kernel.
@Suite("HTTP response buffers")
struct ResponseBuffersTests {
    /// The buffer a thread gave back last is the next one it takes (warm in the core's cache),
    /// page-aligned and of the full size, and a thread keeps at most `cacheLimit` of them.
    @Test func theLastBufferGivenBackIsTheNextTakenWithinABound() {
        let first = ResponseBuffers.take()
        #expect(first.count == HTTPServer.bufferSize)
        #expect(Int(bitPattern: first.baseAddress) % ResponseBuffers.alignment == 0)
        first[first.count - 1] = 7  // the whole buffer is writable
        ResponseBuffers.giveBack(first)
        let second = ResponseBuffers.take()
        #expect(second.baseAddress == first.baseAddress)
        ResponseBuffers.giveBack(second)

        let many = (0..<(ResponseBuffers.cacheLimit + 10)).map { _ in ResponseBuffers.take() }
        let addresses = Set(many.map { $0.baseAddress })
        #expect(addresses.count == many.count, "no buffer lent twice")
        for buffer in many { ResponseBuffers.giveBack(buffer) }
        let again = (0..<(ResponseBuffers.cacheLimit + 10)).map { _ in ResponseBuffers.take() }
        #expect(again.filter { addresses.contains($0.baseAddress) }.count >= ResponseBuffers.cacheLimit)
        #expect(Set(again.map { $0.baseAddress }).count == again.count, "no buffer lent twice")
        for buffer in again { ResponseBuffers.giveBack(buffer) }
    }
}
