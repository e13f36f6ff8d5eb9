import Synchronization
import Testing

@testable import Uring

@Suite("The lock-free job queue")
struct JobQueueTests {
    /// A job value for the queue alone (never run): producer and sequence number in the pointer.
    static func fakeJob(producer: Int, sequence: Int) -> ReadyJob {
        let bits = UInt(producer) << 40 | UInt(sequence + 1) << 4
        return ReadyJob(job: unsafeBitCast(UnsafeRawPointer(bitPattern: bits)!, to: UnownedJob.self), isolated: false)
    }

    static func decode(_ job: ReadyJob) -> (producer: Int, sequence: Int) {
        let bits = UInt(bitPattern: unsafeBitCast(job.job, to: UnsafeRawPointer.self))
        return (Int(bits >> 40), Int((bits >> 4) & 0xF_FFFF_FFFF) - 1)
    }

    @Test func fillsUpAndEmptiesInOrder() {
        let queue = JobQueue(capacity: 8)
        for i in 0..<8 { #expect(queue.push(Self.fakeJob(producer: 1, sequence: i))) }
        #expect(!queue.push(Self.fakeJob(producer: 1, sequence: 8)), "a full queue refuses")
        for i in 0..<8 { #expect(queue.pop().map(Self.decode)?.sequence == i) }
        #expect(queue.pop().map(Self.decode) == nil)
        // And again, across the wrap-around.
        for i in 0..<5 { #expect(queue.push(Self.fakeJob(producer: 2, sequence: i))) }
        for i in 0..<5 { #expect(queue.pop().map(Self.decode)?.sequence == i) }
    }

    /// Four producers push 50,000 jobs each while one consumer pops: nothing is lost or
    /// duplicated, and each producer's jobs come out in the order it pushed them.
    @Test func concurrentProducersLoseNothing() async {
        let queue = JobQueue(capacity: 256)
        let producers = 4
        let perProducer = 50_000
        let done = Counter()
        let consumer = Task.detached { () -> [Int] in
            var next = [Int](repeating: 0, count: producers)
            var outOfOrder = 0
            var received = 0
            while received < producers * perProducer {
                if let job = queue.pop() {
                    let (producer, sequence) = Self.decode(job)
                    if sequence != next[producer] { outOfOrder += 1 }
                    next[producer] = sequence + 1
                    received += 1
                } else if done.value.load(ordering: .acquiring) == producers {
                    if queue.pop() == nil { break }
                }
            }
            return next + [outOfOrder]
        }
        await withTaskGroup(of: Void.self) { group in
            for producer in 0..<producers {
                group.addTask {
                    for sequence in 0..<perProducer {
                        while !queue.push(Self.fakeJob(producer: producer, sequence: sequence)) {}  // full: retry
                    }
                    done.value.add(1, ordering: .releasing)
                }
            }
        }
        let result = await consumer.value
        #expect(Array(result.prefix(producers)) == [Int](repeating: perProducer, count: producers))
        #expect(result.last == 0, "jobs out of order")
    }
}

final class Counter: Sendable {
    let value = Atomic<Int>(0)
}
