/// The error a ``ConcurrentMap`` throws for an element whose transform outlasted the map's
/// `timeout`. The transform is cancelled; the map ends at that element like for any failure.
public struct ConcurrentMapTimeout: Error, Hashable, Sendable, CustomStringConvertible {
    @inlinable public init(index: Int, timeout: Duration) {
        self.index = index
        self.timeout = timeout
    }

    /// The element's position in the input, from 0.
    public var index: Int
    /// The time limit it exceeded.
    public var timeout: Duration

    public var description: String { "element \(index) took longer than \(timeout)" }
}

extension Sequence where Element: Sendable {
    /// Transforms the elements with at most `limit` transforms running at once, and yields the
    /// results as an `AsyncSequence`: in input order (`ordered`, the default) or as they finish.
    ///
    /// ```swift
    /// // Read 10,000 files, 64 at a time, in order.
    /// let contents = paths.mapConcurrently(limit: 64) { path in try await File.readAll(at: path) }
    /// for try await bytes in contents {
    ///     process(bytes)
    /// }
    /// ```
    ///
    /// - Back-pressure: a transform starts only while fewer than `limit` results are running or
    ///   waiting to be consumed, so a slow consumer holds the map at `limit` results in memory.
    /// - Failures: the first error (a transform's, or ``ConcurrentMapTimeout``) is thrown at that
    ///   element's turn (its input position when ordered, when it happened otherwise); the map then
    ///   cancels what is still running and ends. To go on past failures, return a `Result` from the
    ///   transform.
    /// - Cancellation: cancelling the consuming task, or dropping the iterator, cancels every
    ///   running transform; nothing keeps running after the map is gone.
    /// - Rings: called from a task on a ``RingExecutor``, the transforms run on that ring (the
    ///   map's tasks prefer it), so their I/O does not hop elsewhere.
    ///
    /// - Parameters:
    ///   - limit: The most transforms at once; values below 1 count as 1.
    ///   - ordered: Yield in input order (true) or in completion order (false).
    ///   - timeout: A time limit per element, from its start; nil for none.
    ///   - transform: The work for one element.
    @inlinable
    public func mapConcurrently<Output: Sendable>(
        limit: Int, ordered: Bool = true, timeout: Duration? = nil,
        _ transform: @escaping @Sendable (Element) async throws -> Output
    ) -> ConcurrentMap<Element, Output> where Self: Sendable {
        ConcurrentMap(limit: limit, ordered: ordered, timeout: timeout, transform: transform) { feed in
            for element in self {
                guard await feed(element) else { return }
            }
        }
    }
}

extension AsyncSequence where Element: Sendable, Self: Sendable {
    /// Transforms the elements with at most `limit` transforms running at once; the
    /// `AsyncSequence` form of ``Swift/Sequence/mapConcurrently(limit:ordered:timeout:_:)``, with
    /// the same rules. The input is read only as fast as transforms may start; an error of the
    /// input is thrown after the results of the elements before it.
    ///
    /// ```swift
    /// let sizes = FileSystem.contents(of: "/srv/uploads")
    ///     .mapConcurrently(limit: 32, ordered: false) { entry in try await FileSystem.status(of: "/srv/uploads/" + entry.name).size }
    /// ```
    @inlinable
    public func mapConcurrently<Output: Sendable>(
        limit: Int, ordered: Bool = true, timeout: Duration? = nil,
        _ transform: @escaping @Sendable (Element) async throws -> Output
    ) -> ConcurrentMap<Element, Output> {
        ConcurrentMap(limit: limit, ordered: ordered, timeout: timeout, transform: transform) { feed in
            for try await element in self {
                guard await feed(element) else { return }
            }
        }
    }
}

/// The results of ``Swift/Sequence/mapConcurrently(limit:ordered:timeout:_:)``, as they are
/// consumed. Iterate it once.
public struct ConcurrentMap<Input: Sendable, Output: Sendable>: AsyncSequence, Sendable {
    public typealias Element = Output
    public typealias Failure = any Error

    /// Feeds the input to `feed` until it ends or `feed` says stop (false).
    @usableFromInline typealias Producer = @Sendable (_ feed: (Input) async -> Bool) async throws -> Void

    @usableFromInline let limit: Int
    @usableFromInline let ordered: Bool
    @usableFromInline let timeout: Duration?
    @usableFromInline let transform: @Sendable (Input) async throws -> Output
    @usableFromInline let produce: Producer

    @inlinable init(
        limit: Int, ordered: Bool, timeout: Duration?, transform: @escaping @Sendable (Input) async throws -> Output,
        produce: @escaping Producer
    ) {
        self.limit = Swift.max(1, limit)
        self.ordered = ordered
        self.timeout = timeout
        self.transform = transform
        self.produce = produce
    }

    @inlinable
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(owner: ConcurrentMapOwner(core: ConcurrentMapCore(map: self)))
    }

    /// Starts the transforms at the first `next()`; dropping it cancels them.
    public struct AsyncIterator: AsyncIteratorProtocol {
        @usableFromInline let owner: ConcurrentMapOwner<Input, Output>

        @inlinable init(owner: ConcurrentMapOwner<Input, Output>) { self.owner = owner }

        @inlinable
        public mutating func next() async throws -> Output? {
            try await owner.core.next()
        }

        @inlinable
        public mutating func next(isolation actor: isolated (any Actor)?) async throws -> Output? {
            try await owner.core.next()
        }
    }
}

/// Held by the iterator alone (the running transforms hold the core): when the iterator goes
/// away, the iteration ends and what runs is cancelled.
@usableFromInline final class ConcurrentMapOwner<Input: Sendable, Output: Sendable>: Sendable {
    @usableFromInline let core: ConcurrentMapCore<Input, Output>
    @inlinable init(core: ConcurrentMapCore<Input, Output>) { self.core = core }
    @inlinable deinit { core.end() }
}

/// The shared state of one iteration: results waiting for the consumer, the credits that
/// bound the work in hand, and the task that runs the transforms (cancelled when the iterator
/// goes away).
@usableFromInline final class ConcurrentMapCore<Input: Sendable, Output: Sendable>: Sendable {
    @usableFromInline struct State {
        /// Transforms that may still start: `limit` less those running, waiting to be consumed,
        /// or taken by the producer and not started yet (`Slots.held`).
        @usableFromInline var credits: Int
        /// The producer, waiting for a credit, and its answer once woken (true: a credit was
        /// taken for it; false: the iteration is over).
        @usableFromInline var producer: Resumption?
        @usableFromInline var producerAnswer: Bool?
        /// Ordered: results by input position, and the next position to hand out.
        /// (At most `limit` positions are outstanding, so position % limit names a slot.)
        @usableFromInline var byIndex: [Result<Output, any Error>?]
        @usableFromInline var nextIndex = 0
        /// Unordered: results as they came.
        @usableFromInline var arrived: [Result<Output, any Error>] = []
        @usableFromInline var arrivedHead = 0
        /// Once the input has ended, how many elements there were, and its error.
        @usableFromInline var inputCount: Int?
        @usableFromInline var inputError: (any Error)?
        @usableFromInline var handedOut = 0
        /// The consumer, waiting for a result, and what it was handed once woken.
        @usableFromInline var consumer: Resumption?
        @usableFromInline var handedToConsumer: Result<Output?, any Error>?
        @usableFromInline var consumerCancelled = false
        /// The iteration is over (end, failure, cancellation): nothing more starts.
        @usableFromInline var ended = false
        @usableFromInline var driver: Task<Void, Never>?

        @usableFromInline init(credits: Int) {
            self.credits = credits
            byIndex = Array(repeating: nil, count: credits)
        }
    }

    @usableFromInline let map: ConcurrentMap<Input, Output>
    @usableFromInline let state: Lock<State>
    /// Credits back before a waiting producer is woken.
    @usableFromInline let wakeThreshold: Int

    @inlinable init(map: ConcurrentMap<Input, Output>) {
        self.map = map
        state = Lock(State(credits: map.limit))
        wakeThreshold = max(1, map.limit / 4)
    }

    @inlinable func next() async throws -> Output? {
        // A result that is ready is handed out without a suspension (the common case at speed).
        let (ready, mustStart) = state.withLock { state -> (Result<Output?, any Error>?, Bool) in
            (take(&state), state.driver == nil && !state.ended)
        }
        if let ready { return try finishNext(ready) }
        if mustStart { start() }
        // Whoever wakes the consumer leaves its result in `handedToConsumer` and resumes it with the
        // lock held (see `Resumption`).
        await withTaskCancellationHandler {
            await Resumption.suspend { continuation in
                state.withLock { state in
                    if let ready = take(&state) {
                        state.handedToConsumer = ready
                        continuation.resume()
                    } else {
                        state.consumer = continuation
                    }
                }
            }
        } onCancel: {
            state.withLock { state in
                state.consumerCancelled = true
                if let waiting = state.consumer.take() {
                    state.handedToConsumer = .failure(CancellationError())
                    waiting.resume()
                }
            }
        }
        return try finishNext(state.withLock { $0.handedToConsumer.take()! })
    }

    @inlinable func finishNext(_ outcome: Result<Output?, any Error>) throws -> Output? {
        switch outcome {
        case .success(let output?):
            return output
        case .success(nil):
            end()
            return nil
        case .failure(let error):
            end()
            throw error
        }
    }

    /// The next result for the consumer, the end (`.success(nil)`), a failure, or nil: wait.
    @inlinable func take(_ state: inout State) -> Result<Output?, any Error>? {
        if state.consumerCancelled {
            state.consumerCancelled = false
            return .failure(CancellationError())
        }
        if state.ended { return .success(nil) }
        var result: Result<Output, any Error>?
        if map.ordered {
            let slot = state.nextIndex % state.byIndex.count
            result = state.byIndex[slot]
            if result != nil {
                state.byIndex[slot] = nil
                state.nextIndex += 1
            }
        } else if state.arrivedHead < state.arrived.count {
            result = state.arrived[state.arrivedHead]
            state.arrivedHead += 1
            if state.arrivedHead == state.arrived.count {
                state.arrived.removeAll(keepingCapacity: true)
                state.arrivedHead = 0
            }
        }
        if let result {
            state.handedOut += 1
            state.credits += 1
            // The producer, waiting for credits, is woken once a quarter of them are back: it
            // then starts that many transforms in one go, not one task switch per element.
            if state.credits >= wakeThreshold, let producer = state.producer.take() {
                state.credits -= 1
                state.producerAnswer = true
                producer.resume()  // with the lock held: `take` runs under it
            }
            return result.map { Optional($0) }
        }
        if let count = state.inputCount, state.handedOut == count {
            if let error = state.inputError { return .failure(error) }
            return .success(nil)
        }
        return nil
    }

    /// Ends the iteration: nothing more starts, and what runs is cancelled.
    @inlinable func end() {
        let driver = state.withLock { state in
            state.ended = true
            if let producer = state.producer.take() {
                state.producerAnswer = false
                producer.resume()
            }
            return state.driver
        }
        driver?.cancel()
    }

    @inlinable func start() {
        // Children of the driver's task group inherit its executor preference: on a ring, the
        // transforms run on that ring. (On the only ring of `Uring.run`, plain tasks already run
        // there, and a preference would cost every child a status record.)
        let driver = Task(executorPreference: RingExecutor.preferenceForNewTasks) { [self] in
            await withDiscardingTaskGroup { group in
                var slots = Slots()
                do {
                    try await map.produce { element in
                        guard let index = await acquireSlot(&slots) else { return false }
                        // Not once the map has ended (the driver, and so the group, is cancelled).
                        return group.addTaskUnlessCancelled { [self] in
                            deliver(index, await run(element, index: index))
                        }
                    }
                    inputEnded(count: slots.started, error: nil)
                } catch {
                    inputEnded(count: slots.started, error: error)
                }
            }
        }
        state.withLock { $0.driver = driver }
    }

    /// The producer's own count of elements started, and the credits it took and has not used
    /// yet: it takes every free credit in one lock round trip, then starts that many transforms
    /// without the lock.
    @usableFromInline struct Slots {
        @usableFromInline var started = 0
        @usableFromInline var held = 0
        @inlinable init() {}
    }

    /// Waits until a transform may start, and numbers it; nil when the iteration is over.
    @inlinable func acquireSlot(_ slots: inout Slots) async -> Int? {
        if slots.held == 0 {
            let taken = state.withLock { state -> Int? in
                if state.ended { return nil }
                defer { state.credits = 0 }
                return state.credits
            }
            guard let taken else { return nil }
            if taken > 0 {
                slots.held = taken
            } else {
                // Whoever wakes the producer leaves its answer in `producerAnswer` and resumes it
                // with the lock held (see `Resumption`).
                await Resumption.suspend { continuation in
                    state.withLock { state in
                        if state.ended {
                            state.producerAnswer = false
                        } else if state.credits > 0 {
                            state.credits -= 1
                            state.producerAnswer = true
                        } else {
                            state.producer = continuation
                            return
                        }
                        continuation.resume()
                    }
                }
                guard state.withLock({ $0.producerAnswer.take()! }) else { return nil }
                slots.held = 1  // taken for this call by whoever woke it
            }
        }
        slots.held -= 1
        defer { slots.started += 1 }
        return slots.started
    }

    @inlinable func run(_ element: Input, index: Int) async -> Result<Output, any Error> {
        guard let timeout = map.timeout else {
            do { return .success(try await map.transform(element)) } catch { return .failure(error) }
        }
        return await withTaskGroup(of: Result<Output, any Error>?.self) { race in
            race.addTask {
                do { return .success(try await self.map.transform(element)) } catch { return .failure(error) }
            }
            race.addTask {
                do {
                    try await Task.sleep(for: timeout)
                    return .failure(ConcurrentMapTimeout(index: index, timeout: timeout))
                } catch {
                    return nil  // cancelled: the transform finished first
                }
            }
            var outcome: Result<Output, any Error>?
            while outcome == nil, let next = await race.next() { outcome = next }
            race.cancelAll()
            return outcome ?? .failure(CancellationError())
        }
    }

    @inlinable func deliver(_ index: Int, _ result: Result<Output, any Error>) {
        state.withLock { state in
            if map.ordered {
                state.byIndex[index % state.byIndex.count] = result
            } else {
                state.arrived.append(result)
            }
            wakeConsumer(&state)
        }
    }

    @inlinable func inputEnded(count: Int, error: (any Error)?) {
        state.withLock { state in
            state.inputCount = count
            state.inputError = error
            wakeConsumer(&state)
        }
    }

    /// Hands the waiting consumer what is ready for it, if anything, and resumes it (under the
    /// lock: see `Resumption`).
    @inlinable func wakeConsumer(_ state: inout State) {
        guard state.consumer != nil, let ready = take(&state) else { return }
        state.handedToConsumer = ready
        state.consumer.take()!.resume()
    }
}
