// libFuzzer target for the chunked request-body decoder (`ChunkedBodyDecoder`). Built like the
// request-head target (see Tests/Fuzz/HTTPParser): a replay tool in a normal build, whose seed
// corpus (Tests/Fuzz/Corpus/chunked) the test suite replays; a libFuzzer binary with
// `Tests/Fuzz/fuzz.sh chunked`.
// Besides "no crash, no out-of-bounds access", every input is checked against what the decoder
// promises: the same data and the same verdict however the input is split into reads, data
// ranges inside the input, and a body that ends re-encodes to the same data.
import UringFuzzSupport
import UringHTTP

enum Verdict: Equatable {
    case end(at: Int)
    case needMore
    case failed(ChunkedBodyDecoder.Failure)
}

/// Feeds `input` to a decoder in pieces of `piece` bytes, as reads would bring it.
func decode(_ input: UnsafeRawBufferPointer, piece: Int, limits: ChunkedBodyDecoder) -> ([UInt8], Verdict) {
    var decoder = limits
    var data: [UInt8] = []
    var offset = 0
    while offset < input.count {
        let end = min(input.count, offset + piece)
        var at = offset
        while true {
            let view = UnsafeRawBufferPointer(rebasing: input[at..<end])
            let found: (consumed: Int, output: ChunkedBodyDecoder.Output)
            do throws(ChunkedBodyDecoder.Failure) {
                found = try decoder.decode(view)
            } catch {
                return (data, .failed(error))
            }
            precondition(found.consumed >= 0 && found.consumed <= view.count, "consumed outside the input")
            switch found.output {
            case .data(let range):
                precondition(!range.isEmpty && range.lowerBound >= 0, "an empty or negative data range")
                precondition(range.upperBound == found.consumed, "data does not end where the input was consumed")
                data += view[range]
                at += found.consumed
                if at == end { break }
                continue
            case .needMore:
                precondition(found.consumed == view.count, "needMore without consuming the input")
            case .end:
                precondition(decoder.isFinished)
                return (data, .end(at: at + found.consumed))
            }
            break
        }
        offset = end
    }
    return (data, .needMore)
}

func fuzzChunkedBody(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: bytes, count: bytes == nil ? 0 : size)
    for limits in [ChunkedBodyDecoder(), ChunkedBodyDecoder(maximumLineBytes: 8, maximumTrailerBytes: 16)] {
        let whole = decode(input, piece: max(1, input.count), limits: limits)
        precondition(decode(input, piece: max(1, input.count), limits: limits) == whole, "not deterministic")
        // However the bytes arrive, the same data and the same verdict.
        for piece in [1, 2, 3, 7, 64] where piece < input.count {
            let split = decode(input, piece: piece, limits: limits)
            precondition(split.0 == whole.0 && split.1 == whole.1, "pieces of \(piece) decode differently")
        }
        // A body that ends: its data, re-encoded in one chunk, decodes to the same data.
        if case .end = whole.1, !whole.0.isEmpty {
            var encoded = Array(String(whole.0.count, radix: 16).utf8) + [13, 10] + whole.0 + [13, 10]
            encoded += Array("0\r\n\r\n".utf8)
            let again = encoded.withUnsafeBytes { decode($0, piece: $0.count, limits: ChunkedBodyDecoder()) }
            precondition(again.0 == whole.0 && again.1 == .end(at: encoded.count), "re-encoded body differs")
        }
    }
    return 0
}

#if URING_FUZZING
// libFuzzer's runtime refers to this symbol even when its driver is given the callback.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzChunkedBody(data, size) }
#endif

@main
struct FuzzMain {
    static func main() { fuzzMain(fuzzChunkedBody) }
}
