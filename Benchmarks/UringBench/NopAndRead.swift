import Glibc
import SystemPackage
import Uring

// The nop and read scenarios, and the file the read scenario reads.

func runNop(concurrency: Int, options: Options) async throws -> [Measurement] {
    let fields = [("concurrency", "\(concurrency)"), ("executor", options.executor.rawValue)]
    // One in 8 operations is timed: the clock reads would otherwise be a visible part of a no-op.
    var results = [
        try await measureOnRing(
            scenario: "nop", mode: options.executor, fields: fields, concurrency: concurrency, block: nil,
            seconds: options.seconds,
            warmup: options.warmup, sampleEvery: 8,
            offsets: { OffsetGenerator(worker: $0, workers: 1, block: 1, fileSize: 1, sequential: true) },
            operation: AwaitedNop())
    ]
    if options.floor {
        results[0].floorOpsPerSecond = try await runFloor(concurrency: concurrency, options: options).opsPerSecond
    }
    if options.baseline {
        // The cheapest blocking file syscall: a 1-byte pread from the page cache.
        let file = try await TestFile.prepare(path: "/tmp/uring-bench/nop-1mib", size: 1 << 20)
        defer { close(file.fd) }
        results.append(
            measurePread(
                scenario: "nop", fields: fields, threads: options.baselineThreads, fd: file.fd, block: 1,
                fileSize: 1, sequential: true, seconds: options.seconds, warmup: options.warmup, sampleEvery: 8))
    }
    return results
}

func runRead(pattern: String, block: Int, concurrency: Int, options: Options) async throws -> [Measurement] {
    let file = try await TestFile.prepare(path: options.path, size: 1 << 30)
    defer { close(file.fd) }
    guard file.size >= Int64(block) else { fail("the file is smaller than one block") }
    let sequential = pattern == "sequential"
    let fields =
        [
            ("pattern", pattern), ("block", "\(block)"), ("concurrency", "\(concurrency)"),
            ("executor", options.executor.rawValue),
        ] + (options.executor == .group ? [("rings", "\(groupRings)")] : [])
    let uringFile = File(descriptor: FileDescriptor(rawValue: file.fd))
    let size = file.size
    if options.system == "pread" || options.system == "preadv2-nowait" {
        return [
            measurePread(
                scenario: "read", fields: fields, threads: options.baselineThreads, fd: file.fd, block: block,
                fileSize: file.size, sequential: sequential, seconds: options.seconds, warmup: options.warmup,
                sampleEvery: 8, withoutWaiting: options.system == "preadv2-nowait")
        ]
    }
    var results = [
        try await measureOnRing(
            scenario: "read", mode: options.executor, fields: fields, concurrency: concurrency, block: block,
            seconds: options.seconds,
            warmup: options.warmup, sampleEvery: 8,
            offsets: {
                OffsetGenerator(worker: $0, workers: concurrency, block: block, fileSize: size, sequential: sequential)
            },
            operation: AwaitedRead(file: uringFile))
    ]
    if options.baseline {
        results.append(
            measurePread(
                scenario: "read", fields: fields, threads: options.baselineThreads, fd: file.fd, block: block,
                fileSize: file.size, sequential: sequential, seconds: options.seconds, warmup: options.warmup,
                sampleEvery: 8))
    }
    return results
}

/// `uring-bench floor`: tasks that only suspend on a continuation and are resumed by the ring's
/// loop (`RingExecutor.continuationRoundTrip`): what every awaited operation costs before any
/// system call, in any Swift completion runtime. The next performance work is measured against it.
func runFloor(concurrency: Int, options: Options) async throws -> Measurement {
    try await measureOnRing(
        scenario: "floor", mode: options.executor,
        fields: [("concurrency", "\(concurrency)"), ("executor", options.executor.rawValue)],
        concurrency: concurrency, block: nil, seconds: options.seconds, warmup: options.warmup, sampleEvery: 8,
        offsets: { OffsetGenerator(worker: $0, workers: 1, block: 1, fileSize: 1, sequential: true) },
        operation: FloorRoundTrip())
}

/// An awaited no-op (`Uring.nop`).
struct AwaitedNop: MeasuredOperation {
    func run(_ offsets: inout OffsetGenerator, _ buffer: UnsafeMutableRawBufferPointer) async throws(IOError) {
        try await Uring.nop()
    }
}

/// One awaited read of `file` into the worker's buffer at the generator's next offset.
struct AwaitedRead: MeasuredOperation {
    let file: File
    func run(_ offsets: inout OffsetGenerator, _ buffer: UnsafeMutableRawBufferPointer) async throws(IOError) {
        _ = try await file.read(into: buffer, at: offsets.next())
    }
}

/// The floor: a suspension and resumption on the ring with no I/O.
struct FloorRoundTrip: MeasuredOperation {
    func run(_ offsets: inout OffsetGenerator, _ buffer: UnsafeMutableRawBufferPointer) async throws(IOError) {
        await RingExecutor.current.unsafelyUnwrapped.continuationRoundTrip()
    }
}

/// The benchmark file: created once (random bytes), reused, and read once into the page cache.
struct TestFile {
    let fd: Int32
    let size: Int64

    static func prepare(path: String?, size wanted: Int64) async throws -> TestFile {
        let path = path ?? "/tmp/uring-bench/testfile"
        if path.hasPrefix("/tmp/uring-bench/") {
            mkdir("/tmp/uring-bench", 0o755)
            var st = stat()
            if stat(path, &st) != 0 || Int64(st.st_size) < wanted {
                try await create(path, size: wanted)
            }
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { fail("cannot open \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        fstat(fd, &st)
        // Warm the page cache: read it all once.
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: off_t = 0
        while pread(fd, buffer, 1 << 20, offset) > 0 { offset += 1 << 20 }
        return TestFile(fd: fd, size: Int64(st.st_size))
    }

    static func create(_ path: String, size: Int64) async throws {
        var stderr = StandardError()
        print("uring-bench: creating \(size >> 20) MiB test file \(path) (once)", to: &stderr)
        let temporary = FilePath(path + ".partial")
        let file = try await File.open(temporary, .writeOnly, options: [.create, .truncate])
        var state: UInt64 = 0x1234_5678
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { chunk.deallocate() }
        var offset: Int64 = 0
        while offset < size {
            for i in stride(from: 0, to: chunk.count, by: 8) {
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                chunk.storeBytes(of: z ^ (z >> 31), toByteOffset: i, as: UInt64.self)
            }
            try await file.write(UnsafeRawBufferPointer(chunk), at: offset)
            offset += Int64(chunk.count)
        }
        try await file.sync()
        try await file.close()
        try await FileSystem.rename(temporary, to: FilePath(path))
    }
}
