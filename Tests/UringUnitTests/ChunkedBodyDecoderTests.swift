import Testing

@testable import UringHTTP

/// Decodes `text` fed in pieces of `piece` bytes: the data, and how it ended.
private func decodeChunked(_ text: String, piece: Int = .max, _ decoder: ChunkedBodyDecoder = ChunkedBodyDecoder())
    throws(ChunkedBodyDecoder.Failure) -> (data: String, endedAt: Int?, trailers: String)
{
    var decoder = decoder
    let bytes = Array(text.utf8)
    var data: [UInt8] = []
    var offset = 0
    while offset < bytes.count {
        let end = bytes.count - offset > piece ? offset + piece : bytes.count
        var at = offset
        while at < end || at == offset {
            let slice = Array(bytes[at..<end])
            var failure: ChunkedBodyDecoder.Failure?
            var result: (consumed: Int, output: ChunkedBodyDecoder.Output) = (0, .needMore)
            slice.withUnsafeBytes { view in
                do throws(ChunkedBodyDecoder.Failure) {
                    result = try decoder.decode(view)
                } catch {
                    failure = error
                }
            }
            if let failure { throw failure }
            let found = result
            switch found.output {
            case .data(let range):
                data += bytes[(at + range.lowerBound)..<(at + range.upperBound)]
                at += found.consumed
                continue
            case .needMore:
                at = end
            case .end:
                return (
                    String(decoding: data, as: UTF8.self), at + found.consumed,
                    String(decoding: decoder.trailerBytes, as: UTF8.self)
                )
            }
            break
        }
        offset = end
    }
    return (String(decoding: data, as: UTF8.self), nil, String(decoding: decoder.trailerBytes, as: UTF8.self))
}

@Suite("Chunked request bodies")
struct ChunkedBodyDecoderTests {
    @Test(arguments: [1, 2, 3, 5, 1000])
    func chunksExtensionsAndTrailersInAnyPieces(piece: Int) throws {
        let body = "5\r\nhello\r\n6;name=value\r\n world\r\nA \t;x\r\n0123456789\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n"
        let result = try decodeChunked(body + "GET / HTTP/1.1\r\n", piece: piece)
        #expect(result.data == "hello world0123456789")
        #expect(result.endedAt == body.utf8.count)  // the next request is left alone
        #expect(result.trailers == "X-Sum: 1\nY: 2\n")
    }

    @Test func anUnfinishedBodyNeedsMore() throws {
        for text in ["", "5", "5\r", "5\r\nhel", "5\r\nhello", "5\r\nhello\r\n", "0\r\n", "0\r\nX: 1\r\n"] {
            #expect(try decodeChunked(text).endedAt == nil, "\(text.debugDescription)")
        }
        #expect(try decodeChunked("0\r\n\r\n").endedAt == 5)
    }

    @Test(arguments: [
        ("x\r\n", ChunkedBodyDecoder.Failure.badChunkSize),
        ("\r\n", .badChunkSize),
        ("-1\r\n", .badChunkSize),
        ("5 5\r\nhello\r\n", .badChunkSize),  // whitespace, then no extension
        ("5\nhello\r\n", .badLineEnding),
        ("5\r\nhelloX\r\n", .badLineEnding),
        ("5\r\nhello\n0\r\n\r\n", .badLineEnding),
        ("5;a\u{1}\r\nhello\r\n", .badChunkSize),
        ("1000000000000000\r\n", .chunkSizeTooLarge),  // 16 digits
        ("0\r\nX\u{1}: y\r\n\r\n", .badTrailer),
        ("0\r\nX: y\n\r\n", .badLineEnding),
        ("0\r\n\n", .badLineEnding),
    ])
    func malformedBodiesAreRefused(_ text: String, _ expected: ChunkedBodyDecoder.Failure) {
        #expect(throws: expected) { _ = try decodeChunked(text) }
        #expect(throws: expected) { _ = try decodeChunked(text, piece: 1) }
    }

    @Test func fifteenDigitsAreTheLargestSize() throws {
        // 0x0fffffffffffffff bytes announced: the decoder waits for them, it does not overflow.
        #expect(try decodeChunked("fffffffffffffff\r\nabc").data == "abc")
    }

    @Test func limitsOnLinesAndTrailers() throws {
        let small = ChunkedBodyDecoder(maximumLineBytes: 10, maximumTrailerBytes: 8)
        #expect(throws: ChunkedBodyDecoder.Failure.lineTooLong) { _ = try decodeChunked("5;abcdefghij\r\n", small) }
        #expect(throws: ChunkedBodyDecoder.Failure.badTrailer) {
            _ = try decodeChunked("0\r\nX: 123456789\r\n\r\n", small)
        }
        #expect(try decodeChunked("5;abc\r\nhello\r\n0\r\nX: 1\r\n\r\n", small).data == "hello")
    }
}
