// Replays inputs through a fuzz target outside libFuzzer: every file named, or every file in a
// directory named, once. Used by the fuzz targets' normal builds (and so by the test suite, which
// replays the committed seed corpus on every run).
import Glibc

/// The fuzz target's `main`: libFuzzer's driver in a fuzzing build (`-D URING_FUZZING`, see
/// Tests/Fuzz/fuzz.sh), otherwise a replay of the files named on the command line.
public func fuzzMain(_ target: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
    #if URING_FUZZING
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(llvmFuzzerRunDriver(&argc, &argv, target))
    #else
    exit(replayCorpus(CommandLine.arguments.dropFirst()) { target($0, $1) })
    #endif
}

#if URING_FUZZING
// libFuzzer's entry for programs with their own main (linked in by -sanitize=fuzzer).
@_silgen_name("LLVMFuzzerRunDriver")
func llvmFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt
#endif

/// Runs `target` over every file under `paths`; returns the process exit status (0, or 2 when a
/// path cannot be read). A failing property traps inside `target`, as under libFuzzer.
public func replayCorpus(
    _ paths: some Sequence<String>, _ target: (UnsafePointer<UInt8>?, Int) -> CInt
) -> Int32 {
    var files: [String] = []
    for path in paths {
        var info = stat()
        guard stat(path, &info) == 0 else {
            complain("cannot read \(path)")
            return 2
        }
        if info.st_mode & S_IFMT == S_IFDIR {
            guard let directory = opendir(path) else { return 2 }
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { files.append(path + "/" + name) }
            }
            closedir(directory)
        } else {
            files.append(path)
        }
    }
    for file in files.sorted() {
        guard let bytes = readWholeFile(file) else {
            complain("cannot read \(file)")
            return 2
        }
        _ = bytes.withUnsafeBufferPointer { target($0.baseAddress, $0.count) }
    }
    print("inputs=\(files.count)")
    return 0
}

private func readWholeFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { return nil }
        if n == 0 { return bytes }
        bytes += chunk[..<n]
    }
}

private func complain(_ message: String) {
    let line = Array((message + "\n").utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
