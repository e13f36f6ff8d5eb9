import Glibc
import Testing

/// The fuzz targets' committed seed corpora (Tests/Fuzz/Corpus), replayed through the same checks
/// the fuzzer applies: every input that ever broke a property stays fixed.
@Suite("FuzzCorpus")
struct FuzzCorpusTests {
    static let corpusRoot: String = {
        let file = "\(#filePath)"
        let tests = file[..<file.lastIndex(of: "/")!]  // …/Tests/UringTests
        return tests[..<tests.lastIndex(of: "/")!] + "/Fuzz/Corpus"
    }()

    @Test("seed corpus replays cleanly", arguments: ["http", "chunked", "address"])
    func replay(target: String) throws {
        let directory = Self.corpusRoot + "/" + target
        let (status, output) = try runChild(executableNextToTests("uring-fuzz-\(target)"), [directory])
        #expect(status == 0, "\(output)")
        // Every committed input was run (a replay that silently found nothing would pass).
        var count = 0
        if let dir = opendir(directory) {
            while let entry = readdir(dir) { if entry.pointee.d_type == UInt8(DT_REG) { count += 1 } }
            closedir(dir)
        }
        #expect(count >= 10)
        #expect(output.contains("inputs=\(count)"), "\(output)")
    }
}
