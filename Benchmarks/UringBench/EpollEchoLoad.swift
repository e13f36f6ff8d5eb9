import CLiburing
import Glibc
import Uring

/// `uring-bench echo --target … --engine epoll` (the default): the echo load driven by one plain
/// thread with epoll and non-blocking `send`/`recv`, the cheapest client there is, so that a fast
/// server is measured and not the client. Same messages, same checks and same latency as the
/// ring engine (``runEchoTarget(_:connections:size:pipeline:options:)``): each connection writes
/// `pipeline` messages, reads the echo into a scratch buffer no further than the batch's end,
/// compares it with what it sent, and starts its next batch once the whole echo is back (the
/// batches, checks and tally are ``EchoBatch``'s). With `spin` it polls (`epoll_wait` with a zero
/// timeout) instead of sleeping.
func runEchoTargetEpoll(
    connections: [TCPConnection], size: Int, pipeline: Int, spin: Bool, phase: Phase, controller: Controller
) -> [ClientTally] {
    final class Connection {
        let fd: Int32
        var writable = true
        var batch: EchoBatch

        init(fd: Int32, batch: EchoBatch) {
            self.fd = fd
            self.batch = batch
        }

        deinit { batch.free() }
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
        let state = Connection(fd: fd, batch: EchoBatch(seed: index, size: size, pipeline: pipeline))
        var event = makeEvent(EPOLLIN.rawValue, index)
        _ = epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event)
        states.append(state)
    }
    /// The connection failed in `operation` (errno as it was, or 0: the peer closed): counted,
    /// with why, and left out from now on.
    func drop(_ state: Connection, _ operation: String, errno code: Int32) {
        state.batch.fail(operation, errno: code)
        var none = epoll_event()
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, state.fd, &none)
    }
    /// Writes what is left of the batch; arms EPOLLOUT when the socket is full.
    func flush(_ state: Connection, index: Int) {
        while state.batch.sent < batch {
            let n = Glibc.send(
                state.fd, state.batch.base + state.batch.sent, batch - state.batch.sent, Int32(MSG_NOSIGNAL))
            if n > 0 {
                state.batch.sent += n
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
    func start(_ state: Connection, index: Int) {
        if state.batch.begin(phase) { flush(state, index: index) }
    }
    var busy = 0  // connections with a batch in flight
    for (index, state) in states.enumerated() {
        start(state, index: index)
        if state.batch.inFlight { busy += 1 }
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
            guard state.batch.open else { continue }
            if events[e].events & EPOLLOUT.rawValue != 0 {
                flush(state, index: index)
                if !state.batch.open {
                    busy -= 1
                    continue
                }
            }
            guard events[e].events & (EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 else { continue }
            // Read no further than this batch's end, so bytes nobody asked for stay in the socket.
            let n = recv(state.fd, scratch.baseAddress!, batch - state.batch.received, 0)
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { continue }
            if n <= 0 {
                drop(state, "receive", errno: n == 0 ? 0 : errno)
                busy -= 1
                continue
            }
            guard state.batch.accept(scratch.baseAddress!, n) else { continue }
            state.batch.complete()
            start(state, index: index)
            if !state.batch.inFlight { busy -= 1 }
        }
    }
    for state in states { state.batch.endRun() }
    for connection in connections {
        let fd = connection.descriptor.rawValue
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
    }
    return states.map(\.batch.tally)
}

/// An epoll registration for `events` that carries the connection's index.
private func makeEvent(_ events: UInt32, _ index: Int) -> epoll_event {
    var event = epoll_event()
    event.events = events
    event.data.u64 = UInt64(index)
    return event
}
