import CLiburing
import Glibc
import Uring

/// `uring-bench echo --target … --engine epoll` (the default): the echo load driven by one plain
/// thread with epoll and non-blocking `send`/`recv`, the cheapest client there is, so that a fast
/// server is measured and not the client. Same messages, same checks and same latency as the
/// ring engine (``runEchoTarget(_:connections:size:pipeline:options:)``): each connection writes
/// `pipeline` messages, reads the echo into a scratch buffer no further than the batch's end,
/// compares it with what it sent, and starts its next batch once the whole echo is back. A batch
/// is sent straight from the connection's pattern (a window that moves by one byte per message,
/// so no two consecutive batches are alike), with no copy per batch. With `spin` it polls
/// (`epoll_wait` with a zero timeout) instead of sleeping.
func runEchoTargetEpoll(
    connections: [TCPConnection], size: Int, pipeline: Int, spin: Bool, phase: Phase, controller: Controller
) -> [ClientTally] {
    final class Connection {
        let fd: Int32
        /// The connection's random bytes: each batch is the window of `batch` bytes at `base`.
        let pattern: UnsafeMutableRawBufferPointer
        /// The current batch: where it starts in `pattern`.
        var base: UnsafeMutableRawPointer
        var sequence = 0
        var sent = 0
        var received = 0
        var message = 0
        var started: UInt64 = 0
        var measured = false
        var writable = true
        var open = true
        var tally = ClientTally()

        init(fd: Int32, index: Int, size: Int, batch: Int) {
            self.fd = fd
            pattern = .allocate(byteCount: batch + 256, alignment: 16)
            base = pattern.baseAddress!
            fillPattern(base, count: pattern.count, seed: index)
        }

        deinit {
            pattern.deallocate()
        }
    }
    let batch = size * pipeline
    let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
    defer { close(epoll) }
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(batch, 64 * 1024), alignment: 16)
    defer { scratch.deallocate() }
    var states: [Connection] = []
    for (index, connection) in connections.enumerated() {
        let fd = connection.descriptor.rawValue
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let state = Connection(fd: fd, index: index, size: size, batch: batch)
        var event = makeEvent(EPOLLIN.rawValue, index)
        _ = epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event)
        states.append(state)
    }
    /// The connection failed in `operation` (errno as it was, or 0: the peer closed): counted,
    /// with why, and left out from now on.
    func drop(_ state: Connection, _ operation: String, errno code: Int32) {
        state.tally.connectionErrors += 1
        state.tally.failure =
            code == 0
            ? "\(operation): the server closed the connection"
            : "\(operation): \(String(cString: strerror(code))) (errno \(code))"
        state.open = false
        var none = epoll_event()
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, state.fd, &none)
    }
    /// Writes what is left of the batch; arms EPOLLOUT when the socket is full.
    func flush(_ state: Connection, index: Int) {
        while state.sent < batch {
            let n = Glibc.send(state.fd, state.base + state.sent, batch - state.sent, Int32(MSG_NOSIGNAL))
            if n > 0 {
                state.sent += n
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                if state.writable {
                    state.writable = false
                    var event = makeEvent(EPOLLIN.rawValue | EPOLLOUT.rawValue, index)
                    _ = epoll_ctl(epoll, EPOLL_CTL_MOD, state.fd, &event)
                }
                return
            }
            drop(state, "send", errno: errno)
            return
        }
        if !state.writable {
            state.writable = true
            var event = makeEvent(EPOLLIN.rawValue, index)
            _ = epoll_ctl(epoll, EPOLL_CTL_MOD, state.fd, &event)
        }
    }
    /// Starts the connection's next batch, unless the run is over.
    func start(_ state: Connection, index: Int) -> Bool {
        let current = phase.current
        if current == Phase.stop { return false }
        state.base = state.pattern.baseAddress! + (state.sequence & 255)
        state.sequence += pipeline
        state.sent = 0
        state.received = 0
        state.message = 0
        state.measured = current == Phase.measure
        state.started = nowNanoseconds()
        flush(state, index: index)
        return true
    }
    var busy = 0  // connections with a batch in flight
    for (index, state) in states.enumerated() {
        if start(state, index: index), state.open { busy += 1 }
    }
    controller.start()
    var events = [epoll_event](repeating: epoll_event(), count: 256)
    var drainDeadline: UInt64 = 0
    while busy > 0 {
        let ready = epoll_wait(epoll, &events, Int32(events.count), spin ? 0 : 100)
        if ready < 0 && errno != EINTR { break }
        if phase.current == Phase.stop {
            if drainDeadline == 0 { drainDeadline = nowNanoseconds() + 5_000_000_000 }
            if nowNanoseconds() > drainDeadline { break }  // a server that stopped answering
        }
        for e in 0..<max(Int(ready), 0) {
            let index = Int(events[e].data.u64)
            let state = states[index]
            guard state.open else { continue }
            if events[e].events & EPOLLOUT.rawValue != 0 {
                flush(state, index: index)
                if !state.open {
                    busy -= 1
                    continue
                }
            }
            guard events[e].events & (EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 else { continue }
            // Read no further than this batch's end, so bytes nobody asked for stay in the socket.
            let n = recv(state.fd, scratch.baseAddress!, batch - state.received, 0)
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { continue }
            if n <= 0 {
                drop(state, "receive", errno: n == 0 ? 0 : errno)
                busy -= 1
                continue
            }
            if memcmp(scratch.baseAddress!, state.base + state.received, n) != 0 {
                state.tally.verifyErrors += 1
            }
            state.received += n
            let now = nowNanoseconds()
            while state.message < pipeline, state.received >= (state.message + 1) * size {
                if state.measured { state.tally.histogram.record(now - state.started) }
                state.message += 1
            }
            guard state.received == batch else { continue }
            state.tally.total += pipeline
            if state.measured { state.tally.measured += pipeline }
            if !start(state, index: index) || !state.open { busy -= 1 }
        }
    }
    for state in states where state.open && state.received < batch && state.sent > 0 && phase.current == Phase.stop {
        state.tally.connectionErrors += 1  // its echo never came back
        state.tally.failure = "no echo within 5 s of the end"
    }
    for connection in connections {
        let fd = connection.descriptor.rawValue
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
    }
    return states.map(\.tally)
}

/// An epoll registration for `events` that carries the connection's index.
private func makeEvent(_ events: UInt32, _ index: Int) -> epoll_event {
    var event = epoll_event()
    event.events = events
    event.data.u64 = UInt64(index)
    return event
}
