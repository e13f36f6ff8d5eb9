/// Connection racing by RFC 8305 ("Happy Eyeballs v2"): attempts to the addresses in order, each
/// started `delay` after the previous one (or as soon as the previous one fails), the first to
/// succeed wins and the others are cancelled; a late winner is discarded (closed). Generic over
/// the attempt, so it is tested without a network.
enum HappyEyeballs {
    /// What a child of the race reports.
    private enum Event<Connection: Sendable>: Sendable {
        case connected(Connection)
        case failed(IOError)
        /// The delay after the attempt number `attempt` passed.
        case delayPassed(attempt: Int)
    }

    /// Races `attempt` over `addresses` (at least one).
    ///
    /// - Returns: The first connection made.
    /// - Throws: The last attempt's error when every attempt failed; ``IOError/Code/cancelled``
    ///   when the task is cancelled.
    static func race<Connection: Sendable>(
        _ addresses: [SocketAddress],
        delay: Duration = .milliseconds(250),
        attempt: @escaping @Sendable (SocketAddress) async throws(IOError) -> Connection,
        discard: @escaping @Sendable (Connection) async -> Void
    ) async throws(IOError) -> Connection {
        precondition(!addresses.isEmpty, "nothing to connect to")
        let outcome: Result<Connection, IOError> = await withTaskGroup(of: Event<Connection>.self) { group in
            var next = 0
            var running = 0
            var lastError: IOError?
            func start() {
                let index = next
                let address = addresses[index]
                next += 1
                running += 1
                group.addTask {
                    do throws(IOError) {
                        return .connected(try await attempt(address))
                    } catch {
                        return .failed(error)
                    }
                }
                if next < addresses.count {
                    group.addTask {
                        try? await Task.sleep(for: delay)
                        return .delayPassed(attempt: index)
                    }
                }
            }
            start()
            var winner: Connection?
            var allFailed = false
            while winner == nil, !allFailed, let event = await group.next() {
                switch event {
                case .connected(let connection):
                    running -= 1
                    winner = connection
                case .failed(let error):
                    running -= 1
                    lastError = error
                    if next < addresses.count {
                        start()  // at once: no reason to wait after a failure
                    } else if running == 0 {
                        allFailed = true
                    }
                case .delayPassed(let attempt):
                    // Only the delay of the newest attempt starts another (an earlier one is stale
                    // when a failure already started the next).
                    if attempt == next - 1 && next < addresses.count && !Task.isCancelled { start() }
                }
            }
            group.cancelAll()  // pending delays, losing attempts (a group waits for all children)
            // Attempts that connected while losing are closed, never leaked.
            while let event = await group.next() {
                if case .connected(let late) = event { await discard(late) }
            }
            if let winner { return .success(winner) }
            return .failure(lastError ?? IOError(.cancelled, operation: .connect))
        }
        return try outcome.get()
    }
}
