import Glibc
import SystemPackage
import Uring

/// One connection's request loop: read into a fixed buffer, answer every complete request in it
/// (pipelined responses go out together), keep the rest, repeat.
@safe struct Session<Connection: HTTPTransport> {
    // SAFETY (@safe): its buffers are allocated when the session starts and freed when its request loop ends; reads
    // and writes stay within their counts.
    let server: HTTPServer
    let connection: Connection
    let slot: Int
    let root: File?
    let input: UnsafeMutableRawBufferPointer
    let output: UnsafeMutableRawBufferPointer
    private var used = 0
    private var out: ResponseWriter

    init(
        server: HTTPServer, connection: Connection, slot: Int, root: File?,
        input: UnsafeMutableRawBufferPointer, output: UnsafeMutableRawBufferPointer
    ) {
        self.server = server
        self.connection = connection
        self.slot = slot
        self.root = root
        unsafe self.input = unsafe input
        unsafe self.output = unsafe output
        out = unsafe ResponseWriter(output)
    }

    mutating func run() async {
        server.setReadingHead(slot)  // the header timeout runs from the accept
        while true {
            var consumed = 0
            var close = false
            var refused = false
            var bodyToDiscard = 0
            while consumed < used {
                let view = unsafe UnsafeRawBufferPointer(rebasing: input[consumed..<used])
                let head: RequestHead
                do throws(RequestHeadError) {
                    guard let parsed = try unsafe server.configuration.parser.parse(view) else { break }
                    head = parsed
                } catch {
                    // After the responses already gathered for earlier pipelined requests.
                    guard await reserve(512) else { return }
                    simpleResponse(error.status, keepAlive: false)
                    close = true
                    refused = true
                    break
                }
                server.setBusy(slot)
                if head.contentLength > server.configuration.maximumBodyBytes {
                    guard await reserve(512) else { return }
                    simpleResponse(413, keepAlive: false)
                    close = true
                    refused = true
                    break
                }
                let keepAlive = head.keepAlive && !server.isDraining
                guard unsafe await respond(to: head, in: view, keepAlive: keepAlive) else {
                    close = true
                    break
                }
                let buffered = view.count - head.length
                if head.contentLength > buffered {
                    bodyToDiscard = head.contentLength - buffered
                    consumed = used
                } else {
                    consumed += head.length + head.contentLength
                }
                if !keepAlive {
                    close = true
                    break
                }
                if bodyToDiscard > 0 { break }
            }
            guard await flush() else { return }
            if refused { await lingeringClose() }
            if close { return }
            if bodyToDiscard > 0 {
                // GET and HEAD have no use for a body: read it and drop it.
                used = 0
                while bodyToDiscard > 0 {
                    guard
                        let n = unsafe await connection.receiveOnce(
                            into: UnsafeMutableRawBufferPointer(rebasing: input[..<min(input.count, bodyToDiscard)]),
                            timeout: nil),
                        n > 0
                    else { return }
                    bodyToDiscard -= n
                }
                consumed = 0
            }
            if consumed > 0 {
                let rest = used - consumed
                if rest > 0 {
                    // SAFETY: both ranges lie in `input`; memmove handles the overlap.
                    unsafe memmove(input.baseAddress!, input.baseAddress! + consumed, rest)
                }
                used = rest
                if used > 0 { server.setReadingHead(slot) }
            }
            if used == 0 {
                if server.isDraining { return }
                server.setIdle(slot)
            }
            guard
                let n = unsafe await connection.receiveOnce(
                    into: UnsafeMutableRawBufferPointer(rebasing: input[used...]), timeout: nil), n > 0
            else { return }
            if used == 0 { server.setReadingHead(slot) }
            used += n
        }
    }

    /// After refusing a request the client may still be sending it: closing with unread data
    /// would reset the connection and could destroy the error response before the client reads
    /// it. So: end our side, then read and drop what comes for up to a second (or 1 MiB).
    private func lingeringClose() async {
        await connection.endSending()
        var dropped = 0
        let deadline = ContinuousClock.now + .seconds(1)
        while dropped < 1 << 20 {
            let left = deadline - ContinuousClock.now
            guard left > .zero,
                let n = unsafe await connection.receiveOnce(into: input, timeout: left), n > 0
            else { return }
            dropped += n
        }
    }

    /// Sends what the writer holds. False if the connection failed. A client that stops reading
    /// is cut off by the watchdog once the send has waited the idle timeout (`setWriting`), not
    /// by a timeout of the send's own: that would cost a linked timeout, a kernel timer armed and
    /// cancelled, for every send.
    private mutating func flush() async -> Bool {
        guard out.count > 0 else { return true }
        let bytes = unsafe out.written
        out = unsafe ResponseWriter(output)
        server.setWriting(slot)
        return unsafe await connection.sendAll(bytes, timeout: nil)
    }

    /// Makes room for a response head (flushing earlier pipelined responses if needed).
    private mutating func reserve(_ bytes: Int) async -> Bool {
        if out.remaining >= bytes { return true }
        return await flush()
    }

    private mutating func finishHead(keepAlive: Bool, minorVersion: Int = 1) {
        if !keepAlive {
            out.append("Connection: close\r\n")
        } else if minorVersion == 0 {
            out.append("Connection: keep-alive\r\n")
        }
        out.append("\r\n")
    }

    /// A status with a one-line text body (headers only for HEAD is the caller's business: error
    /// bodies are always sent, since the request may not have been understood).
    /// The caller has reserved room (512 bytes is plenty).
    private mutating func simpleResponse(_ status: Int, keepAlive: Bool, extra: StaticString? = nil, head: Bool = false)
    {
        let reason = reasonPhrase(status)
        unsafe out.statusLine(status, date: server.now())
        if let extra { out.append(extra) }
        out.append("Content-Type: text/plain; charset=utf-8\r\nContent-Length: ")
        out.append(decimal: 4 + reason.utf8CodeUnitCount + 1)
        out.append("\r\n")
        finishHead(keepAlive: keepAlive)
        if !head {
            out.append(decimal: status)
            out.append(32)
            out.append(reason)
            out.append(10)
        }
    }

    /// Answers one request. False if the connection must close (it failed, or a body could not
    /// be sent whole).
    private mutating func respond(to head: RequestHead, in view: UnsafeRawBufferPointer, keepAlive: Bool) async -> Bool
    {
        guard await reserve(1024) else { return false }
        switch head.method {
        case .other:
            simpleResponse(405, keepAlive: keepAlive, extra: "Allow: GET, HEAD\r\n")
            return true
        case .get, .head:
            if server.configuration.hello {
                unsafe out.statusLine(200, date: server.now())
                out.append("Content-Type: text/plain\r\nContent-Length: 13\r\n")
                finishHead(keepAlive: keepAlive, minorVersion: head.minorVersion)
                if head.method == .get { out.append("Hello, World!") }
                return true
            }
            return unsafe await serveFile(head, view, keepAlive: keepAlive)
        }
    }

    // MARK: - Files

    private mutating func serveFile(_ head: RequestHead, _ view: UnsafeRawBufferPointer, keepAlive: Bool) async -> Bool
    {
        let isHead = head.method == .head
        guard let root else {
            simpleResponse(404, keepAlive: keepAlive, head: isHead)
            return true
        }
        let target = unsafe UnsafeRawBufferPointer(rebasing: view[head.target])
        guard let (path, trailingSlash) = unsafe RequestPath.decode(target) else {
            simpleResponse(400, keepAlive: keepAlive, head: isHead)
            return true
        }
        var file: File
        do throws(IOError) {
            file = try await File.open(filePath(path), beneath: root)
        } catch {
            simpleResponse(status(for: error), keepAlive: keepAlive, head: isHead)
            return true
        }
        var status: FileStatus
        var name = path
        do throws(IOError) {
            status = try await file.status()
            if status.kind == .directory {
                if !trailingSlash && !path.isEmpty {
                    try? await file.close()
                    unsafe redirectToDirectory(target, keepAlive: keepAlive)
                    return true
                }
                let directory = file
                do throws(IOError) {
                    file = try await File.open("index.html", beneath: directory)
                } catch {
                    try? await directory.close()
                    throw error
                }
                try? await directory.close()
                name = Array("index.html".utf8)
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
        let result = unsafe await send(file, status, name: name, head, view, keepAlive: keepAlive)
        try? await file.close()
        return result
    }

    /// Headers and body for an open regular file.
    private mutating func send(
        _ file: File, _ status: FileStatus, name: [UInt8], _ head: RequestHead, _ view: UnsafeRawBufferPointer,
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
        out.append(MediaTypes.forPath(name))
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

        // The body: small ones go out with the head in one send (a 64 KiB file too); larger ones
        // stream in reads of the buffer's size.
        var offset = Int64(start)
        var left = length
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
        return true
    }

    private func filePath(_ bytes: [UInt8]) -> FilePath {
        var c = bytes.map { CChar(bitPattern: $0) }
        c.append(0)
        return unsafe c.withUnsafeBufferPointer { unsafe FilePath(platformString: $0.baseAddress!) }
    }

    private func status(for error: IOError) -> Int {
        switch error.errno {
        case .noSuchFileOrDirectory?, .notDirectory?, .fileNameTooLong?: 404
        case .improperLink?, .tooManySymbolicLinkLevels?, .permissionDenied?, .notPermitted?: 403
        default: 500
        }
    }

    private mutating func redirectToDirectory(_ target: UnsafeRawBufferPointer, keepAlive: Bool) {
        var end = target.count
        if let q = unsafe target.firstIndex(of: UInt8(ascii: "?")) { end = q }
        unsafe out.statusLine(301, date: server.now())
        out.append("Location: ")
        unsafe out.append(UnsafeRawBufferPointer(rebasing: target[..<end]))
        out.append("/\r\nContent-Length: 0\r\n")
        finishHead(keepAlive: keepAlive)
    }

    private mutating func validators(_ tag: (UInt64, UInt64, UInt64), mtime: FileStatus.Timestamp) {
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

    private mutating func notModified(_ tag: (UInt64, UInt64, UInt64), mtime: FileStatus.Timestamp, keepAlive: Bool) {
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
