import Glibc
import Testing

@testable import Uring

/// The frame splitter behind `TCPConnection.lines` and `frames`, without a kernel.
@Suite("Framing")
struct FramingTests {
    /// Feeds `input` in pieces of the given sizes and collects every frame, then the last one.
    func split(_ input: String, pieces: [Int], maximumLength: Int = 100) throws(IOError) -> [String] {
        var splitter = FrameSplitter(
            delimiter: UInt8(ascii: "\n"), maximumLength: maximumLength, dropsCarriageReturn: true)
        let bytes = Array(input.utf8)
        var frames: [String] = []
        var offset = 0
        var i = 0
        while offset < bytes.count {
            let size = min(pieces[i % pieces.count], bytes.count - offset)
            splitter.append(Array(bytes[offset..<offset + size]))
            offset += size
            i += 1
            while let frame = try splitter.nextFrame() { frames.append(String(decoding: frame, as: UTF8.self)) }
        }
        if let last = try splitter.finish() { frames.append(String(decoding: last, as: UTF8.self)) }
        return frames
    }

    @Test(arguments: [[1], [2], [3], [5, 1], [100]])
    func linesAcrossChunkBoundaries(_ pieces: [Int]) throws {
        let input = "GET / HTTP/1.1\r\nHost: x\r\n\r\nplain\nlast without newline"
        #expect(try split(input, pieces: pieces) == ["GET / HTTP/1.1", "Host: x", "", "plain", "last without newline"])
    }

    @Test func aTrailingNewlineGivesNoEmptyLastLine() throws {
        #expect(try split("a\nb\n", pieces: [1]) == ["a", "b"])
        #expect(try split("\n\n", pieces: [1]) == ["", ""])
        #expect(try split("", pieces: [1]) == [])
    }

    @Test func anOverlongLineThrows() throws {
        #expect(throws: IOError(.frameTooLong, operation: .receive)) {
            _ = try split("0123456789\n", pieces: [3], maximumLength: 5)
        }
        // Without its newline, as soon as it is known to be too long (the buffer stays bounded).
        var splitter = FrameSplitter(delimiter: UInt8(ascii: "\n"), maximumLength: 5, dropsCarriageReturn: true)
        splitter.append(Array("abcdef".utf8))
        #expect(throws: IOError(.frameTooLong, operation: .receive)) { _ = try splitter.nextFrame() }
        // Exactly the maximum is fine, with or without CR.
        #expect(try split("12345\r\n12345\n", pieces: [2], maximumLength: 5) == ["12345", "12345"])
    }

    @Test func otherDelimiters() throws {
        var splitter = FrameSplitter(delimiter: 0, maximumLength: 10, dropsCarriageReturn: false)
        splitter.append([1, 2, 0, 13, 0, 3])
        #expect(try splitter.nextFrame() == [1, 2])
        #expect(try splitter.nextFrame() == [13], "a CR is kept unless asked")
        #expect(try splitter.nextFrame() == nil)
        #expect(try splitter.finish() == [3])
    }
}

extension IntegrationTests {
    @Suite("Timed reads and lines")
    struct TimedReadsAndLines {
        @Test func aTimedReadOnAPipeThatNeverBecomesReadyTimesOut() async throws {
            let pipe = Pipe()
            defer { pipe.close() }
            await #expect(throws: IOError(.timedOut, operation: .read)) {
                _ = try await pipe.read.read(upTo: 16, timeout: .milliseconds(50))
            }
            // Bytes that came before the deadline are returned, not dropped.
            try await pipe.write.write(contentsOf: [1, 2, 3])
            #expect(try await pipe.read.read(upTo: 16, timeout: .milliseconds(50)) == [1, 2, 3])
        }

        @Test func connectionReadUpToLoopsAndReceiveDoesNot() async throws {
            let (client, server) = try await connectedPair()
            try await client.write(contentsOf: [1, 2])
            #expect(try await server.receive(upTo: 10, timeout: .seconds(5)) == [1, 2], "one receive: what is there")
            let reading = Task { try await server.read(upTo: 4, timeout: .seconds(5)) }
            try await client.write(contentsOf: [3])
            try await Task.sleep(for: .milliseconds(10))
            try await client.write(contentsOf: [4, 5, 6])
            #expect(try await reading.value == [3, 4, 5, 6], "read(upTo:) waits for the count")
            await #expect(throws: IOError(.timedOut, operation: .receive)) {
                _ = try await server.read(upTo: 4, timeout: .milliseconds(30))
            }
            try await client.shutdown(.write)
            #expect(try await server.read(upTo: 4, timeout: .seconds(5)) == [], "end of stream")
            try await client.close()
            try await server.close()
        }

        @Test func linesFromAConnection() async throws {
            let (client, server) = try await connectedPair()
            let sent = Task {
                for piece in ["HELLO\r", "\nsecond line\n\nth", "ird\r\nno newline at the end"] {
                    try await client.write(contentsOf: Array(piece.utf8))
                    try await Task.sleep(for: .milliseconds(2))
                }
                try await client.shutdown(.write)
            }
            var lines: [String] = []
            for try await line in server.lines { lines.append(line) }
            try await sent.value
            #expect(lines == ["HELLO", "second line", "", "third", "no newline at the end"])
            try await client.close()
            try await server.close()
        }

        @Test func anOverlongLineFromAConnectionThrows() async throws {
            let (client, server) = try await connectedPair()
            try await client.write(contentsOf: Array(repeating: UInt8(ascii: "x"), count: 10_000))
            await #expect(throws: IOError(.frameTooLong, operation: .receive)) {
                for try await _ in server.lines(maximumLength: 1024) {}
            }
            try await client.close()
            try await server.close()
        }
    }
}
