import Glibc
import HTTPTypes
import SystemPackage
import Uring

/// The directory index's name.
private let indexName = "index.html"

// Static files: what a ``FileHandler`` answers, written into the session's response buffer
// (no allocation per request: the head is parsed in place, the body read into the buffer).
extension Session {
    /// The buffer request paths are decoded into (allocated on first use, as long as a head).
    func decodedPathBuffer() -> UnsafeMutableRawBufferPointer {
        if let existing = unsafe decodedPath { return unsafe existing }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: parser.maximumHeadBytes, alignment: 16)
        unsafe decodedPath = unsafe buffer
        return unsafe buffer
    }

    /// A handler hands a request to a file handler. When the request still says what the
    /// connection parsed (method, target and the four fields that matter to files), that head is
    /// served as it is; otherwise (a handler rewrote the path, or a field) the request's method,
    /// path and those fields are written as a request head into a scratch buffer and parsed like
    /// one, so one code path serves both.
    func serveFile(_ request: UInt64, _ files: FileHandler, _ httpRequest: HTTPRequest) async throws(HTTPServerError) {
        try check(request, expecting: .notStarted)
        if headInInput {
            let view = unsafe UnsafeRawBufferPointer(rebasing: input[consumed..<consumed + head.length])
            if unsafe saysTheSame(httpRequest, as: head, in: view) {
                guard unsafe await serveFile(files, head, view, keepAlive: keepAlive) else {
                    response = .failed
                    throw HTTPServerError(.connection)
                }
                return
            }
        }
        let scratchSize = parser.maximumHeadBytes
        let scratch: UnsafeMutableRawBufferPointer
        if let existing = unsafe fileHead {
            unsafe scratch = unsafe existing
        } else {
            unsafe scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: scratchSize, alignment: 16)
            unsafe fileHead = unsafe scratch
        }
        var writer = unsafe ResponseWriter(scratch)
        writer.append(httpRequest.method == .head ? "HEAD " : httpRequest.method == .get ? "GET " : "POST ")
        writer.append(string: httpRequest.path ?? "/")
        writer.append(" HTTP/1.1\r\nHost: h\r\n")
        for field in httpRequest.headerFields {
            let name = field.name
            guard name == .range || name == .ifRange || name == .ifNoneMatch || name == .ifModifiedSince else {
                continue
            }
            writer.append(string: name.rawName)
            writer.append(": ")
            unsafe field.withUnsafeBytesOfValue { unsafe writer.append(contentsOf: $0) }
            writer.append("\r\n")
        }
        writer.append("\r\n")
        let parsed =
            writer.overflowed ? nil : try? unsafe RequestHeadParser(maximumHeadBytes: scratchSize).parse(writer.written)
        guard var fileRequest = parsed else {
            guard await reserve(512) else { throw HTTPServerError(.connection) }
            response = .finished
            simpleResponse(400, keepAlive: keepAlive)
            return
        }
        fileRequest.minorVersion = head.minorVersion
        guard unsafe await serveFile(files, fileRequest, writer.written, keepAlive: keepAlive) else {
            response = .failed
            throw HTTPServerError(.connection)
        }
    }

    /// Whether `request` says what `head` (parsed from `view`) says to a file handler: the same
    /// method (GET, HEAD or another), the same target, and the same `Range`, `If-Range`,
    /// `If-None-Match` and `If-Modified-Since` fields, each at most once. Reads the request's
    /// fields in order, as the written head would (a lookup by name would build swift-http-types'
    /// index of the fields: an allocation).
    func saysTheSame(_ request: HTTPRequest, as head: RequestHead, in view: UnsafeRawBufferPointer) -> Bool {
        let method: RequestHead.Method = request.method == .get ? .get : request.method == .head ? .head : .other
        guard method == head.method, let path = request.path else { return false }
        let target = unsafe UnsafeRawBufferPointer(rebasing: view[head.target])
        guard path.utf8.count == target.count else { return false }
        if let samePath = unsafe path.utf8.withContiguousStorageIfAvailable({ unsafe $0.elementsEqual(target) }) {
            guard samePath else { return false }
        } else {
            guard unsafe path.utf8.elementsEqual(target) else { return false }
        }
        // (A function, not an array of the four: no allocation.)
        func conditional(_ index: Int) -> Range<Int>? {
            switch index {
            case 0: head.range
            case 1: head.ifRange
            case 2: head.ifNoneMatch
            default: head.ifModifiedSince
            }
        }
        var seen = 0
        for field in request.headerFields {
            let index: Int
            switch field.name {
            case .range: index = 0
            case .ifRange: index = 1
            case .ifNoneMatch: index = 2
            case .ifModifiedSince: index = 3
            default: continue
            }
            guard seen & (1 << index) == 0, let original = conditional(index) else { return false }
            seen |= 1 << index
            let sameValue = unsafe field.withUnsafeBytesOfValue { unsafe $0.elementsEqual(view[original]) }
            guard sameValue else { return false }
        }
        var expected = 0
        for index in 0..<4 where conditional(index) != nil { expected |= 1 << index }
        return seen == expected
    }

    /// Answers a GET or HEAD for a file under `files`' root from a parsed head (`view` holds its
    /// bytes); other methods get a 405. False if the connection must close.
    func serveFile(_ files: FileHandler, _ head: RequestHead, _ view: UnsafeRawBufferPointer, keepAlive: Bool)
        async -> Bool
    {
        guard await reserve(1024) else { return false }
        response = .finished
        let isHead = head.method == .head
        guard head.method != .other else {
            simpleResponse(405, keepAlive: keepAlive, extra: "Allow: GET, HEAD\r\n")
            return true
        }
        let root = files.directory
        let fullTarget = unsafe UnsafeRawBufferPointer(rebasing: view[head.target])
        // The part of the target under the handler's prefix (the whole target for "/").
        guard let relative = unsafe files.relativeTarget(fullTarget) else {
            simpleResponse(404, keepAlive: keepAlive, head: isHead)
            return true
        }
        // The prefix alone (`/static`): its directory, by the slash-ended URL.
        if relative.isEmpty {
            unsafe redirectToDirectory(fullTarget, keepAlive: keepAlive)
            return true
        }
        let target = unsafe UnsafeRawBufferPointer(rebasing: fullTarget[relative])
        // Decoded into the session's path buffer (as long as a head: a target always fits).
        let decoded = unsafe decodedPathBuffer()
        guard let (count, trailingSlash) = unsafe RequestPath.decode(target, into: decoded) else {
            simpleResponse(400, keepAlive: keepAlive, head: isHead)
            return true
        }
        let path = unsafe UnsafeRawBufferPointer(rebasing: decoded[..<count])
        var file: File
        // Not held across the open while nothing is written in it: the response buffer taken
        // after it is the one given back last on this thread, warm (`ResponseBuffers`).
        let lend = out.count == 0
        if lend { giveBackOutput() }
        do throws(IOError) {
            file = try unsafe await File.open(pathBytes: path, beneath: root)
        } catch {
            if lend { takeOutput() }
            simpleResponse(status(for: error), keepAlive: keepAlive, head: isHead)
            return true
        }
        if lend { takeOutput() }
        var status: FileStatus
        var index = false
        do throws(IOError) {
            status = try await file.status()
            if status.kind == .directory {
                if unsafe !trailingSlash && !path.isEmpty {
                    try? await file.close()
                    unsafe redirectToDirectory(fullTarget, keepAlive: keepAlive)
                    return true
                }
                let directory = file
                do throws(IOError) {
                    file = try await File.open(pathBytes: indexName.utf8, beneath: directory)
                } catch {
                    try? await directory.close()
                    throw error
                }
                try? await directory.close()
                index = true
                status = try await file.status()
            }
        } catch {
            try? await file.close()
            simpleResponse(self.status(for: error), keepAlive: keepAlive, head: isHead)
            return true
        }
        guard status.kind == .regular else {
            try? await file.close()
            simpleResponse(403, keepAlive: keepAlive, head: isHead)
            return true
        }
        let type = unsafe index ? MediaTypes.forPath(indexName.utf8) : MediaTypes.forPath(path)
        let result = unsafe await sendFile(file, status, type: type, head, view, keepAlive: keepAlive)
        let lendAgain = out.count == 0
        if lendAgain { giveBackOutput() }
        try? await file.close()
        if lendAgain { takeOutput() }
        return result
    }

    /// Bodies from this size on are sent from the page cache (`sendfile(2)`) rather than read
    /// into the response buffer: below it, the one send of head and body costs less.
    static var sendFileThreshold: Int { 16 * 1024 }

    /// Headers and body for an open regular file.
    private func sendFile(
        _ file: File, _ status: FileStatus, type: StaticString, _ head: RequestHead, _ view: UnsafeRawBufferPointer,
        keepAlive: Bool
    ) async -> Bool {
        let isHead = head.method == .head
        let size = Int(status.size)
        let mtime = status.modificationTime

        // Validators.
        var tag = (UInt64(0), UInt64(0), UInt64(0))
        tag.0 = status.inode
        tag.1 = UInt64(size)
        tag.2 = UInt64(max(0, mtime.seconds)) &* 1_000_000_000 &+ UInt64(mtime.nanoseconds)
        if let inm = head.ifNoneMatch {
            if unsafe etagListMatches(UnsafeRawBufferPointer(rebasing: view[inm]), tag) {
                notModified(tag, mtime: mtime, keepAlive: keepAlive)
                return true
            }
        } else if let ims = head.ifModifiedSince,
            let since = unsafe HTTPDate.parse(UnsafeRawBufferPointer(rebasing: view[ims])),
            Int(mtime.seconds) <= since
        {
            notModified(tag, mtime: mtime, keepAlive: keepAlive)
            return true
        }

        // Range.
        var start = 0
        var length = size
        var partial = false
        if let range = head.range {
            var applies = true
            if let ifRange = head.ifRange {
                applies = unsafe etagEquals(UnsafeRawBufferPointer(rebasing: view[ifRange]), tag)
            }
            if applies {
                switch unsafe parseRange(UnsafeRawBufferPointer(rebasing: view[range]), size: size) {
                case .ignore: break
                case .unsatisfiable:
                    unsafe out.statusLine(416, date: server.now())
                    out.append("Content-Range: bytes */")
                    out.append(decimal: size)
                    out.append("\r\nContent-Length: 0\r\n")
                    finishHead(keepAlive: keepAlive, minorVersion: head.minorVersion)
                    return true
                case .range(let s, let l):
                    start = s
                    length = l
                    partial = true
                }
            }
        }

        unsafe out.statusLine(partial ? 206 : 200, date: server.now())
        out.append("Content-Type: ")
        out.append(type)
        out.append("\r\nContent-Length: ")
        out.append(decimal: length)
        out.append("\r\nAccept-Ranges: bytes\r\n")
        validators(tag, mtime: mtime)
        if partial {
            out.append("Content-Range: bytes ")
            out.append(decimal: start)
            out.append(45)
            out.append(decimal: start + length - 1)
            out.append(47)
            out.append(decimal: size)
            out.append("\r\n")
        }
        finishHead(keepAlive: keepAlive, minorVersion: head.minorVersion)
        if isHead || length == 0 { return true }

        // The body: a small one goes out with the head in one send; on plain TCP a larger one
        // goes from the page cache into the socket (`sendfile(2)`) while it is cached; what is
        // not cached, and every body on TLS, streams in reads of the buffer's size (a 64 KiB one
        // still with its head).
        var offset = Int64(start)
        var left = length
        if Connection.sendsFromPageCache && length >= Self.sendFileThreshold {
            guard await flushWithoutWaiting(more: true) else { return false }
            server.setWriting(slot)
            guard let sent = try? await connection.sendCachedFile(file, at: offset, count: left) else { return false }
            offset += Int64(sent)
            left -= sent
        }
        while left > 0 {
            if out.remaining == 0 { guard await flush() else { return false } }
            let room = min(out.remaining, left)
            let into = unsafe UnsafeMutableRawBufferPointer(rebasing: output[out.count..<out.count + room])
            do throws(IOError) {
                try unsafe await file.read(exactlyInto: into, at: offset)
            } catch {
                // Shorter than announced (truncated meanwhile) or unreadable: the head is gone,
                // so the only honest thing left is to close.
                return false
            }
            out = unsafe ResponseWriter(output, count: out.count + room)
            offset += Int64(room)
            left -= room
            if left > 0 { guard await flush() else { return false } }
        }
        // A large body leaves now, read a moment ago and warm in the core's cache, rather than
        // after the file's close (small ones wait to go out with pipelined responses).
        if length >= Self.sendFileThreshold { guard await flush() else { return false } }
        return true
    }

    private func status(for error: IOError) -> Int {
        switch error.errno {
        case .noSuchFileOrDirectory?, .notDirectory?, .fileNameTooLong?: 404
        case .improperLink?, .tooManySymbolicLinkLevels?, .permissionDenied?, .notPermitted?: 403
        default: 500
        }
    }

    private func redirectToDirectory(_ target: UnsafeRawBufferPointer, keepAlive: Bool) {
        var end = target.count
        if let q = unsafe target.firstIndex(of: UInt8(ascii: "?")) { end = q }
        unsafe out.statusLine(301, date: server.now())
        out.append("Location: ")
        unsafe out.append(UnsafeRawBufferPointer(rebasing: target[..<end]))
        out.append("/\r\nContent-Length: 0\r\n")
        finishHead(keepAlive: keepAlive)
    }

    private func validators(_ tag: (UInt64, UInt64, UInt64), mtime: FileStatus.Timestamp) {
        out.append("ETag: \"")
        out.append(hex: tag.0)
        out.append(45)
        out.append(hex: tag.1)
        out.append(45)
        out.append(hex: tag.2)
        out.append("\"\r\nLast-Modified: ")
        out.append(httpDate: Int(mtime.seconds))
        out.append("\r\n")
    }

    private func notModified(_ tag: (UInt64, UInt64, UInt64), mtime: FileStatus.Timestamp, keepAlive: Bool) {
        unsafe out.statusLine(304, date: server.now())
        validators(tag, mtime: mtime)
        finishHead(keepAlive: keepAlive)
    }
}
// MARK: - Validators and ranges

/// The entity-tag text of `tag`, as sent (without quotes).
private func etagText(_ tag: (UInt64, UInt64, UInt64)) -> [UInt8] {
    func hex(_ v: UInt64) -> [UInt8] { Array(String(v, radix: 16).utf8) }
    return hex(tag.0) + [45] + hex(tag.1) + [45] + hex(tag.2)
}

/// `If-Range`: a strong comparison with one entity tag (a date there is treated as "no match").
func etagEquals(_ value: UnsafeRawBufferPointer, _ tag: (UInt64, UInt64, UInt64)) -> Bool {
    let text = etagText(tag)
    return unsafe value.count == text.count + 2 && value.first == 34 && value.last == 34
        && value[1..<value.count - 1].elementsEqual(text)
}

/// `If-None-Match`: `*`, or a list of entity tags compared weakly (a `W/` prefix is ignored).
func etagListMatches(_ value: UnsafeRawBufferPointer, _ tag: (UInt64, UInt64, UInt64)) -> Bool {
    let text = etagText(tag)
    var matched = false
    unsafe scanTokens(value, 0..<value.count) { token in
        var t = unsafe UnsafeRawBufferPointer(rebasing: value[token])
        if unsafe t.count == 1 && t[0] == UInt8(ascii: "*") {
            matched = true
            return
        }
        if unsafe t.count > 2 && t[0] == UInt8(ascii: "W") && t[1] == UInt8(ascii: "/") {
            unsafe t = unsafe UnsafeRawBufferPointer(rebasing: t[2...])
        }
        if unsafe t.count == text.count + 2 && t.first == 34 && t.last == 34 && t[1..<t.count - 1].elementsEqual(text) {
            matched = true
        }
    }
    return matched
}

enum RangeResult: Equatable {
    /// No usable single byte range (absent, malformed, several ranges, another unit): send the
    /// whole representation.
    case ignore
    case unsatisfiable
    case range(start: Int, length: Int)
}

/// One `bytes=` range (RFC 9110 §14.1.2): `a-b`, `a-` or `-n`.
func parseRange(_ value: UnsafeRawBufferPointer, size: Int) -> RangeResult {
    let prefix: [UInt8] = Array("bytes=".utf8)
    guard value.count > prefix.count, unsafe value[..<prefix.count].elementsEqual(prefix) else { return .ignore }
    let spec = unsafe UnsafeRawBufferPointer(rebasing: value[prefix.count...])
    if unsafe spec.contains(44) { return .ignore }  // several ranges: serve the whole file instead
    guard let dash = unsafe spec.firstIndex(of: 45) else { return .ignore }
    func number(_ part: Slice<UnsafeRawBufferPointer>) -> Int? {
        guard unsafe !part.isEmpty, unsafe part.count <= 18 else { return nil }
        var n = 0
        for index in unsafe part.indices {
            let b = unsafe part[index]
            guard isDigit(b) else { return nil }
            n = n * 10 + Int(b - 48)
        }
        return n
    }
    let first = unsafe spec[..<dash]
    let last = unsafe spec[(dash + 1)...]
    if unsafe first.isEmpty {
        guard let suffix = unsafe number(last) else { return .ignore }
        if suffix == 0 || size == 0 { return .unsatisfiable }
        let length = min(suffix, size)
        return .range(start: size - length, length: length)
    }
    guard let start = unsafe number(first) else { return .ignore }
    var end = size - 1
    if unsafe !last.isEmpty {
        guard let e = unsafe number(last) else { return .ignore }
        if e < start { return .ignore }
        end = min(e, size - 1)
    }
    if start >= size { return .unsatisfiable }
    return .range(start: start, length: end - start + 1)
}
