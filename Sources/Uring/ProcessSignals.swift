import Glibc

/// SIGINT and SIGTERM (or other signals), received on the ring: a server's shutdown trigger.
///
/// Deprecated: ``Signals/stream(_:)`` does this and more (any number of consumers, each seeing
/// every signal; signals added later; the previous disposition restored when the last stream
/// ends). This is a thin wrapper over one such stream.
///
/// ```swift
/// for await signal in Signals.stream([.interrupt, .terminate]) {
///     print("\(signal): shutting down")
///     break
/// }
/// ```
@available(*, deprecated, message: "use Signals.stream(_:), an AsyncSequence of signals")
public enum ProcessSignals {
    private static let installed = Lock<SignalStream?>(nil)

    /// Subscribes to `signals` (default SIGINT and SIGTERM). Later calls do nothing.
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/setup`` with `EINVAL` for a signal that
    ///   cannot be caught (SIGKILL, SIGSTOP).
    public static func install(_ signals: [Int32] = [SIGINT, SIGTERM]) throws(IOError) {
        let wanted = signals.compactMap(Signal.init(rawValue:))
        guard wanted.count == signals.count else { throw IOError.system(EINVAL, .setup) }
        installed.withLock { stream in
            if stream == nil { stream = Signals.stream(Set(wanted)) }
        }
    }

    /// Waits for the next of the installed signals and returns its number.
    ///
    /// - Throws: ``IOError/Code/cancelled`` when the waiting task is cancelled (the installed
    ///   signals then end, as their stream does); ``IOError/Code/invalidArgument`` if
    ///   ``install(_:)`` was not called.
    public static func next() async throws(IOError) -> Int32 {
        guard let stream = installed.withLock({ $0 }) else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .read)
        }
        var iterator = stream.makeAsyncIterator()
        guard let signal = await iterator.next() else { throw IOError(.cancelled, operation: .read) }
        return signal.rawValue
    }
}
