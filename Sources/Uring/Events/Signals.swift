import Glibc
import Logging

/// A POSIX signal that can be caught.
public struct Signal: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The signal's number.
    public let rawValue: Int32

    /// A signal by number; nil for SIGKILL, SIGSTOP and numbers that name no signal.
    public init?(rawValue: Int32) {
        guard SignalHandlers.isCatchable(rawValue) else { return nil }
        self.rawValue = rawValue
    }

    private init(_ number: Int32) { rawValue = number }

    /// `SIGHUP`: the terminal went away; by convention, reload configuration.
    public static let hangup = Signal(SIGHUP)
    /// `SIGINT`: Ctrl-C.
    public static let interrupt = Signal(SIGINT)
    /// `SIGQUIT`.
    public static let quit = Signal(SIGQUIT)
    /// `SIGTERM`: please stop (what `kill`, systemd and Kubernetes send first).
    public static let terminate = Signal(SIGTERM)
    /// `SIGUSR1`.
    public static let user1 = Signal(SIGUSR1)
    /// `SIGUSR2`.
    public static let user2 = Signal(SIGUSR2)
    /// `SIGCHLD`: a child process stopped or ended.
    public static let child = Signal(SIGCHLD)
    /// `SIGWINCH`: the terminal's size changed.
    public static let windowChange = Signal(SIGWINCH)
    /// `SIGALRM`.
    public static let alarm = Signal(SIGALRM)

    public var description: String {
        switch rawValue {
        case SIGHUP: "SIGHUP"
        case SIGINT: "SIGINT"
        case SIGQUIT: "SIGQUIT"
        case SIGTERM: "SIGTERM"
        case SIGUSR1: "SIGUSR1"
        case SIGUSR2: "SIGUSR2"
        case SIGCHLD: "SIGCHLD"
        case SIGWINCH: "SIGWINCH"
        case SIGALRM: "SIGALRM"
        default: "signal \(rawValue)"
        }
    }
}

/// Signals as asynchronous sequences: signal-driven programs, the modern way.
///
/// ```swift
/// for await signal in Signals.stream([.hangup, .terminate]) {
///     if signal == .hangup { try await reloadConfiguration() } else { break }
/// }
/// ```
///
/// - Every stream gets every signal it subscribed to, from the moment ``stream(_:)`` returns
///   (fan-out: two streams of `SIGHUP` both see each one; neither takes it from the other).
/// - A stream created later adds its signals; while any stream wants a signal, the process
///   handles it (its default action, like terminating on `SIGTERM`, does not happen).
/// - When the last stream of a signal ends (its consumer is cancelled, it is ``SignalStream/cancel()``ed,
///   or it is dropped), the disposition the process had before is put back.
/// - The handler writes the signal's number to a pipe, which a ring reads: no thread waits in
///   `sigwait`, and no task is woken from a signal handler. It works the same on both drivers.
///   Signals that arrive while the consumer is busy wait for it, in order; as everywhere in POSIX,
///   a standard signal sent again before its handler ran is merged into one by the kernel.
public enum Signals {
    /// A stream of `signals`, subscribed now.
    ///
    /// ```swift
    /// let reloads = Signals.stream([.hangup])
    /// Task { for await _ in reloads { await config.reload() } }
    /// ```
    public static func stream(_ signals: Set<Signal>) -> SignalStream {
        SignalStream(subscription: SignalHub.shared.subscribe(signals))
    }
}

/// The signals one ``Signals/stream(_:)`` subscribed to, as they arrive. Iterate it once.
public struct SignalStream: AsyncSequence, Sendable {
    public typealias Element = Signal
    public typealias Failure = Never

    let subscription: SignalSubscription

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(subscription: subscription)
    }

    /// Ends the stream now: a waiting `next()` returns nil, and the signals go back to their
    /// previous disposition if no other stream wants them.
    public func cancel() {
        SignalHub.shared.end(subscription.id)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let subscription: SignalSubscription

        /// The next signal; nil once the stream was cancelled (or its task was).
        public mutating func next() async -> Signal? {
            await SignalHub.shared.next(subscription.id)
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async -> Signal? {
            await SignalHub.shared.next(subscription.id)
        }
    }
}

/// One stream's subscription: ended (and its signals released) when the last copy of the
/// stream is gone, if not before.
final class SignalSubscription: Sendable {
    let id: UInt64
    init(id: UInt64) { self.id = id }
    deinit { SignalHub.shared.end(id) }
}

/// The process's signal streams: who wants what, what each has not taken yet, and the one
/// consumer at a time that reads the pipe for everyone.
final class SignalHub: Sendable {
    static let shared = SignalHub()

    private struct Subscriber {
        var signals: Set<Int32>
        var queue: [Signal] = []
        var waiter: CheckedContinuation<Void, Never>?
        var ended = false
    }

    private struct State {
        var pipeRead: Int32 = -1
        var subscribers: [UInt64: Subscriber] = [:]
        var nextID: UInt64 = 1
        /// Streams per signal, and the disposition each signal had before the first.
        var counts: [Int32: Int] = [:]
        var saved: [Int32: sigaction] = [:]
        /// A consumer is reading the pipe for everyone.
        var reading = false
    }

    private let state = Lock(State())

    /// The signal pipe's two descriptors once created (they live for the process: a handler may
    /// run on another thread at any time, so the write end is never closed or renumbered).
    var pipeDescriptors: [Int32] {
        state.withLock { state in state.pipeRead < 0 ? [] : [state.pipeRead, unsafe SignalHandlers.pipeWrite] }
    }

    func subscribe(_ signals: Set<Signal>) -> SignalSubscription {
        let id = state.withLock { state -> UInt64 in
            let id = state.nextID
            state.nextID += 1
            var subscriber = Subscriber(signals: Set(signals.map(\.rawValue)))
            if state.pipeRead < 0 {
                guard let pipe = SignalHandlers.makePipe() else {
                    StallDetector.current.logger.error("Signals: cannot create the signal pipe (errno \(errno))")
                    subscriber.ended = true
                    state.subscribers[id] = subscriber
                    return id
                }
                state.pipeRead = pipe.read
                unsafe SignalHandlers.pipeWrite = pipe.write
            }
            for signal in subscriber.signals {
                state.counts[signal, default: 0] += 1
                if state.counts[signal] == 1, let previous = SignalHandlers.install(signal) {
                    state.saved[signal] = previous
                }
            }
            state.subscribers[id] = subscriber
            return id
        }
        return SignalSubscription(id: id)
    }

    /// Ends subscription `id` (once): wakes its consumer, releases its signals.
    func end(_ id: UInt64) {
        state.withLock { state in
            guard var subscriber = state.subscribers[id], !subscriber.ended else { return }
            subscriber.ended = true
            let waiter = subscriber.waiter
            subscriber.waiter = nil
            subscriber.queue = []
            state.subscribers[id] = subscriber
            release(subscriber.signals, &state)
            // With the lock held, which the consumer takes when it wakes: it may be on another
            // thread and not yet suspended (see `Resumption`).
            waiter?.resume()
        }
    }

    private func release(_ signals: Set<Int32>, _ state: inout State) {
        for signal in signals {
            state.counts[signal, default: 1] -= 1
            if state.counts[signal] == 0 {
                state.counts[signal] = nil
                if let previous = state.saved.removeValue(forKey: signal) { SignalHandlers.restore(signal, previous) }
            }
        }
        if state.counts.isEmpty && !state.reading && state.pipeRead >= 0 { SignalHandlers.drain(state.pipeRead) }
    }

    private enum Step {
        case deliver(Signal)
        case end
        case read(Int32)
        case wait
    }

    func next(_ id: UInt64) async -> Signal? {
        while true {
            let step = state.withLock { state -> Step in
                guard var subscriber = state.subscribers[id], !subscriber.ended else { return .end }
                if !subscriber.queue.isEmpty {
                    let signal = subscriber.queue.removeFirst()
                    state.subscribers[id] = subscriber
                    return .deliver(signal)
                }
                if !state.reading {
                    state.reading = true
                    return .read(state.pipeRead)
                }
                return .wait
            }
            switch step {
            case .deliver(let signal):
                return signal
            case .end:
                forget(id)
                return nil
            case .read(let fd):
                let bytes: [UInt8]
                do throws(IOError) {
                    bytes = try await SignalHandlers.readPipe(fd)
                } catch {
                    // Cancelled (or the pipe failed): this consumer is done; another one reads.
                    fanOut([], reader: id)
                    end(id)
                    forget(id)
                    return nil
                }
                fanOut(bytes, reader: id)
            case .wait:
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                        let resumeNow = state.withLock { state -> Bool in
                            guard var subscriber = state.subscribers[id], !subscriber.ended,
                                subscriber.queue.isEmpty, state.reading
                            else { return true }
                            subscriber.waiter = continuation
                            state.subscribers[id] = subscriber
                            return false
                        }
                        if resumeNow { continuation.resume() }
                    }
                } onCancel: {
                    self.end(id)
                }
            }
        }
    }

    /// Hands the signal numbers just read to every stream that wants them, ends the reader's
    /// turn, and wakes the consumers that have something now, or one to read next.
    private func fanOut(_ bytes: [UInt8], reader: UInt64) {
        state.withLock { state in
            state.reading = false
            for byte in bytes {
                guard let signal = Signal(rawValue: Int32(byte)) else { continue }
                for (key, var subscriber) in state.subscribers
                where !subscriber.ended && subscriber.signals.contains(signal.rawValue) {
                    subscriber.queue.append(signal)
                    state.subscribers[key] = subscriber
                }
            }
            // Everyone waiting wakes: those with signals take them; the first without becomes
            // the next reader; the rest wait again. They are resumed with the lock held, which
            // each takes when it wakes (see `end`).
            for (key, var subscriber) in state.subscribers where subscriber.waiter != nil && key != reader {
                let waiter = subscriber.waiter!
                subscriber.waiter = nil
                state.subscribers[key] = subscriber
                waiter.resume()
            }
        }
    }

    /// Drops an ended subscription's record (its signals were released by `end`).
    private func forget(_ id: UInt64) {
        state.withLock { state in
            if state.subscribers[id]?.ended == true && state.subscribers[id]?.waiter == nil {
                state.subscribers[id] = nil
            }
        }
    }
}
