// libFuzzer target for the HTTP/1.1 request-head parser, the request-path decoder and the HTTP
// date parser. Built two ways:
// - normally (`swift build`): a replay tool; `uring-fuzz-http FILE|DIR…` runs every input once
//   (the committed seed corpus is replayed by the test suite this way);
// - with `Tests/Fuzz/fuzz.sh http` (`-sanitize=fuzzer,address -D URING_FUZZING`): the
//   main hands over to libFuzzer's driver, which calls `fuzzHTTPParser` with generated inputs.
// Besides "no crash, no out-of-bounds access", every input is checked against properties the
// parser promises (see `check`); a broken property stops the fuzzer like a crash.
import UringFuzzSupport
import UringHTTP

func fuzzHTTPParser(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    check(input, RequestHeadParser())
    // Tiny limits reach the 414/431 paths with short inputs.
    check(input, RequestHeadParser(maximumHeadBytes: 96, maximumRequestLineBytes: 40, maximumFields: 3))
    return 0
}

func check(_ input: UnsafeRawBufferPointer, _ parser: RequestHeadParser) {
    let first: Result<RequestHead?, RequestHeadError> = Result { () throws(RequestHeadError) in try parser.parse(input)
    }
    let again: Result<RequestHead?, RequestHeadError> = Result { () throws(RequestHeadError) in try parser.parse(input)
    }
    precondition(first == again, "parse is not deterministic")
    guard case .success(let parsed) = first else { return }
    guard let head = parsed else {
        // "Not complete yet" is only allowed while under the head limit.
        precondition(
            input.count < parser.maximumHeadBytes + 8, "incomplete verdict for \(input.count) bytes over the limit")
        return
    }
    // A head ends with its empty line, inside the input and the limit.
    precondition(head.length >= 4 && head.length <= input.count && head.length <= parser.maximumHeadBytes + 8)
    precondition(
        input[head.length - 4] == 13 && input[head.length - 3] == 10 && input[head.length - 2] == 13
            && input[head.length - 1] == 10)
    for range in [head.target, head.authority, head.range, head.ifRange, head.ifNoneMatch, head.ifModifiedSince]
        .compactMap({ $0 })
    {
        precondition(range.lowerBound >= 0 && range.upperBound <= head.length, "a field range outside the head")
    }
    // The target is a path (origin form, or what follows an absolute form's authority, which
    // then ends right before it), or `*` alone.
    precondition(
        !head.target.isEmpty
            && (input[head.target.lowerBound] == UInt8(ascii: "/")
                || (head.target.count == 1 && input[head.target.lowerBound] == UInt8(ascii: "*")))
    )
    if let authority = head.authority {
        precondition(!authority.isEmpty && authority.upperBound == head.target.lowerBound)
        precondition(input[authority].allSatisfy { $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "@") })
    }
    precondition(head.minorVersion == 0 || head.minorVersion == 1)
    // The head alone parses to the same head; any shorter prefix is not a head.
    let exact = UnsafeRawBufferPointer(rebasing: input[..<head.length])
    precondition((try? parser.parse(exact)) == head, "the head alone parses differently")
    let truncated = UnsafeRawBufferPointer(rebasing: input[..<(head.length - 1)])
    if case .some(.some) = try? parser.parse(truncated) { preconditionFailure("a truncated head parsed") }

    // The path decoder never yields a path that leaves the root.
    let target = UnsafeRawBufferPointer(rebasing: input[head.target])
    if let decoded = RequestPath.decode(target) {
        let path = decoded.path
        precondition(!path.contains(0) && !path.contains(UInt8(ascii: "\\")), "NUL or backslash in a decoded path")
        precondition(
            path.first != UInt8(ascii: "/") && path.last != UInt8(ascii: "/"),
            "decoded path with a leading or trailing slash")
        for segment in path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
            precondition(!segment.isEmpty || path.isEmpty, "empty segment in a decoded path")
            precondition(
                !segment.elementsEqual([46]) && !segment.elementsEqual([46, 46]), "dot segment in a decoded path")
        }
    }
    // A date that parses formats back to itself.
    if let field = head.ifModifiedSince, let seconds = HTTPDate.parse(UnsafeRawBufferPointer(rebasing: input[field])) {
        withUnsafeTemporaryAllocation(byteCount: HTTPDate.length, alignment: 1) { out in
            HTTPDate.format(seconds, into: out.baseAddress!)
            precondition(HTTPDate.parse(UnsafeRawBufferPointer(out)) == seconds, "date round trip")
        }
    }
}

#if URING_FUZZING
// libFuzzer's runtime refers to this symbol even when its driver is given the callback.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzHTTPParser(data, size) }
#endif

@main
struct FuzzMain {
    static func main() { fuzzMain(fuzzHTTPParser) }
}
