import Foundation
import NIOCore
import NIOFileSystem
import SystemPackage

// `uring-peers read`: reads of a page-cached file with Foundation's FileHandle and with
// NIOFileSystem, the way their documentation shows them, `--concurrency` reads in flight.

/// The measured window's bounds, written by the timer thread before it sets phase 2.
private final class Window: @unchecked Sendable {
    var started = 0.0
    var ended = 0.0
    var cpuStarted = 0.0
    var cpuEnded = 0.0
}

/// Where each worker reads next: random block-aligned offsets, or its own sequential stretch.
struct Offsets {
    var state: UInt64
    var next: Int64
    let block: Int64
    let blocks: Int64
    let sequential: Bool

    init(worker: Int, workers: Int, block: Int, fileSize: Int64, sequential: Bool) {
        self.block = Int64(block)
        blocks = max(fileSize / Int64(block), 1)
        self.sequential = sequential
        state = 0x9E37_79B9_7F4A_7C15 &* UInt64(worker + 1)
        next = (blocks * Int64(worker) / Int64(max(workers, 1))) * Int64(block)
    }

    mutating func take() -> Int64 {
        if sequential {
            let offset = next
            next += block
            if next + block > blocks * block { next = 0 }
            return offset
        }
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return Int64(state % UInt64(blocks)) * block
    }
}

func runRead(_ options: Options) async throws -> String {
    let attributes = try FileManager.default.attributesOfItem(atPath: options.path)
    let fileSize = (attributes[.size] as? NSNumber)?.int64Value ?? 0
    guard fileSize >= Int64(options.block) else { fail("\(options.path) is smaller than one block") }
    let phase = Phase()
    let block = options.block
    let sequential = options.pattern == "sequential"
    let workers = options.concurrency
    let path = options.path
    let worker: @Sendable (Int, @Sendable (Int64) async throws -> Int) async throws -> (Int, Histogram) = {
        index, read in
        var offsets = Offsets(
            worker: index, workers: workers, block: block, fileSize: fileSize, sequential: sequential)
        var histogram = Histogram()
        var ops = 0
        while true {
            let current = phase.current
            if current == 2 { break }
            let started = nowNanoseconds()
            let count = try await read(offsets.take())
            guard count == block else { throw CocoaError(.fileReadUnknown) }
            if current == 1 {
                ops += 1
                histogram.record(nowNanoseconds() - started)
            }
        }
        return (ops, histogram)
    }
    // The window: the workers run; a plain thread sleeps through warm-up and measurement (no
    // async sleep: blocking workers may hold every thread of the cooperative pool).
    func measure(_ body: @escaping @Sendable (Int) async throws -> (Int, Histogram)) async throws -> String {
        let window = Window()
        let timer = Thread {
            Thread.sleep(forTimeInterval: options.warmup)
            window.started = now()
            window.cpuStarted = processCPUSeconds()
            phase.set(1)
            Thread.sleep(forTimeInterval: options.seconds)
            window.ended = now()
            window.cpuEnded = processCPUSeconds()
            phase.set(2)
        }
        var ops = 0
        var histogram = Histogram()
        try await withThrowingTaskGroup(of: (Int, Histogram).self) { group in
            for index in 0..<workers { group.addTask { try await body(index) } }
            timer.start()
            for try await (n, h) in group {
                ops += n
                histogram.merge(h)
            }
        }
        let seconds = window.ended - window.started
        let cpu = window.cpuEnded - window.cpuStarted
        return [
            "peer=\(options.system)", "scenario=read", "pattern=\(options.pattern)", "block=\(block)",
            "concurrency=\(workers)", "seconds=\(String(format: "%.3f", seconds))", "ops=\(ops)",
            "ops_per_sec=\(Int((Double(ops) / seconds).rounded()))",
            "p50_us=\(String(format: "%.3f", histogram.quantileMicroseconds(0.5)))",
            "p99_us=\(String(format: "%.3f", histogram.quantileMicroseconds(0.99)))",
            "cpu_us_per_op=\(String(format: "%.3f", cpu * 1e6 / Double(max(ops, 1))))",
        ].joined(separator: " ")
    }
    switch options.system {
    case "foundation":
        // One FileHandle per worker (a handle's offset is shared state): seek, then read.
        return try await measure { index in
            guard let handle = FileHandle(forReadingAtPath: path) else { throw CocoaError(.fileNoSuchFile) }
            defer { try? handle.close() }
            return try await worker(index) { offset in
                try handle.seek(toOffset: UInt64(offset))
                return try handle.read(upToCount: block)?.count ?? 0
            }
        }
    case "niofs":
        return try await FileSystem.shared.withFileHandle(forReadingAt: FilePath(path)) { handle in
            try await measure { index in
                try await worker(index) { offset in
                    try await handle.readChunk(fromAbsoluteOffset: offset, length: .bytes(Int64(block))).readableBytes
                }
            }
        }
    default:
        fail("unknown system '\(options.system)' for read (foundation or niofs)")
    }
}
