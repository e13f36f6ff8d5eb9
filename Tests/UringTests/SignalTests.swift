import Glibc
import Testing

@testable import Uring

/// The handler `signal` has now: true when it is the default action.
func hasDefaultDisposition(_ signal: Int32) -> Bool {
    var current = sigaction()
    sigaction(signal, nil, &current)
    return unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self) == 0  // SIG_DFL
}

/// The next signal of `iterator`, or nil after `seconds`.
func nextSignal(_ stream: SignalStream, within seconds: Double = 10) async -> Signal? {
    await withTaskGroup(of: Signal?.self) { group in
        group.addTask {
            var iterator = stream.makeAsyncIterator()
            return await iterator.next()
        }
        group.addTask {
            try? await Task.sleep(for: .seconds(seconds))
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}

extension IntegrationTests {
    @Suite("Signals", .serialized)
    struct SignalStreams {
        @Test func everyStreamGetsEverySignalAndTheDefaultComesBack() async throws {
            #expect(hasDefaultDisposition(SIGHUP) && hasDefaultDisposition(SIGUSR1))
            let first = Signals.stream([.hangup])
            let second = Signals.stream([.hangup, .terminate])
            #expect(!hasDefaultDisposition(SIGHUP))
            kill(getpid(), SIGHUP)
            async let one = nextSignal(first)
            async let two = nextSignal(second)
            #expect(await one == .hangup)
            #expect(await two == .hangup)

            // A stream created later adds SIGUSR1; the others do not see it.
            let later = Signals.stream([.user1])
            #expect(!hasDefaultDisposition(SIGUSR1))
            kill(getpid(), SIGUSR1)
            #expect(await nextSignal(later) == .user1)
            kill(getpid(), SIGHUP)
            async let three = nextSignal(first)
            async let four = nextSignal(second)
            #expect(await three == .hangup)
            #expect(await four == .hangup, "SIGUSR1 was not queued for the SIGHUP streams")

            // A signal that arrives while nobody waits is kept for the stream.
            kill(getpid(), SIGUSR1)
            try await Task.sleep(for: .milliseconds(50))
            #expect(await nextSignal(later) == .user1)

            later.cancel()
            #expect(hasDefaultDisposition(SIGUSR1), "the last SIGUSR1 stream is gone")
            #expect(!hasDefaultDisposition(SIGHUP))
            first.cancel()
            #expect(!hasDefaultDisposition(SIGHUP), "one SIGHUP stream is left")
            second.cancel()
            #expect(hasDefaultDisposition(SIGHUP) && hasDefaultDisposition(SIGTERM))
            var iterator = first.makeAsyncIterator()
            #expect(await iterator.next() == nil, "a cancelled stream ends")
        }

        @Test func cancellingTheConsumingTaskEndsTheStream() async throws {
            let stream = Signals.stream([.user2])
            let consumer = Task {
                var count = 0
                for await _ in stream { count += 1 }
                return count
            }
            try await Task.sleep(for: .milliseconds(20))
            kill(getpid(), SIGUSR2)
            #expect(await eventually(seconds: 10) { !hasDefaultDisposition(SIGUSR2) })
            try await Task.sleep(for: .milliseconds(50))
            consumer.cancel()
            #expect(await consumer.value == 1)
            // The stream value still exists here, but it has ended: the default is back.
            #expect(hasDefaultDisposition(SIGUSR2))
            withExtendedLifetime(stream) {}
        }

        @Test func signalNumbersThatCannotBeCaughtAreNotSignals() {
            #expect(Signal(rawValue: SIGKILL) == nil)
            #expect(Signal(rawValue: SIGSTOP) == nil)
            #expect(Signal(rawValue: 0) == nil)
            #expect(Signal(rawValue: SIGHUP) == .hangup)
            #expect("\(Signal.terminate)" == "SIGTERM")
        }
    }
}
