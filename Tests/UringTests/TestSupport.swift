import Glibc
import SystemPackage
import Testing

@testable import Uring

/// Whether io_uring can be set up here; integration tests are skipped (visibly) when not.
let ringAvailable: Bool = {
    do {
        _ = try RingExecutor.shared()
        return true
    } catch {
        print("io_uring unavailable, integration tests skipped: \(error)")
        return false
    }
}()

/// The number of open descriptors of this process.
func openDescriptorCount() -> Int {
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { count += 1 }
    }
    return count - 1  // the directory stream itself
}

/// This process's open descriptors and what each refers to (`readlink` of /proc/self/fd/N).
func openDescriptors() -> [Int32: String] {
    guard let dir = opendir("/proc/self/fd") else { return [:] }
    let own = dirfd(dir)
    var result: [Int32: String] = [:]
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard let fd = Int32(name), fd != own else { continue }
        var target = [CChar](repeating: 0, count: 512)
        let n = readlink("/proc/self/fd/\(fd)", &target, 511)
        result[fd] = n > 0 ? String(decoding: target.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }
    closedir(dir)
    return result
}

/// A fresh directory under /tmp, removed (with its files) by `cleanup()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/uring-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func file(_ name: String) -> FilePath { FilePath(path + "/" + name) }

    func cleanup() {
        _ = system("rm -rf '\(path)'")
    }
}

/// A pipe as two `File`s; `close()` closes both ends synchronously.
struct Pipe {
    let read: File
    let write: File

    init() {
        var fds: [Int32] = [0, 0]
        precondition(pipe(&fds) == 0, "pipe failed")
        // Not inherited by the children some tests spawn (one with `ulimit -n 48`).
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        read = File(descriptor: FileDescriptor(rawValue: fds[0]))
        write = File(descriptor: FileDescriptor(rawValue: fds[1]))
    }

    func close() {
        _ = Glibc.close(read.descriptor.rawValue)
        _ = Glibc.close(write.descriptor.rawValue)
    }
}

/// A `File` for a descriptor number that is not open, and that nothing else in the process will
/// be handed while the test runs (the kernel hands out the lowest free number, and this one is
/// far above what the tests use): for tests of calls on a closed descriptor. A closed pipe's
/// number would not do: a suite running in parallel (or Dispatch's timer) can get it back.
func closedDescriptor() -> File {
    var fd: Int32 = 900
    while fcntl(fd, F_GETFD) != -1 { fd += 1 }
    return File(descriptor: FileDescriptor(rawValue: fd))
}

/// Deterministic pseudo-random bytes (SplitMix64), so failures reproduce.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func bytes(_ count: Int) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        result.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= count {
                raw.storeBytes(of: next(), toByteOffset: i, as: UInt64.self)
                i += 8
            }
            while i < count {
                raw[i] = UInt8(truncatingIfNeeded: next())
                i += 1
            }
        }
        return result
    }
}

/// Waits (polling the ring's counters) until `condition` holds, at most `seconds`.
func eventually(seconds: Double = 20, _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return await condition()
}

/// Raises the soft limit on open descriptors to the hard limit (tests with 1,000 connections need
/// about 2,100) and returns the new soft limit.
@discardableResult
func raiseDescriptorLimit() -> Int {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    return Int(limit.rlim_cur)
}
