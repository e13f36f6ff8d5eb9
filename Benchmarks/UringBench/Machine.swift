import Glibc
import Uring

// What the comparison suite records about the machine it ran on, and its noise checks: the CPU
// time of everything else, and steal time, from /proc/stat.

/// The machine, as the report shows it.
struct MachineInfo {
    var cpuModel = "unknown CPU"
    var onlineCPUs = 1
    /// The CPUs this process may run on (its affinity mask).
    var allowedCPUs: [Int] = []
    var kernel = ""
    /// The driver the suite's rings run on, and the io_uring setup flags the kernel accepted (or
    /// "epoll").
    var backend = ""
    var ringSetup = ""
    var liburing = "unknown"
    var swift = "unknown"
    /// SwiftNIO's and Hummingbird's versions, from the peer package's Package.resolved.
    var peerVersions: [(String, String)] = []

    static func current() async -> MachineInfo {
        var info = MachineInfo()
        info.cpuModel = cpuModelName()
        info.onlineCPUs = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        info.allowedCPUs = readAllowedCPUs()
        var uts = utsname()
        uname(&uts)
        info.kernel = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let ring = RingExecutor.current {
            let statistics = await ring.statistics()
            info.backend = "\(statistics.backend)"
            info.ringSetup = statistics.setupMode
        }
        info.liburing = liburingVersion()
        let swift = spawnAndWait("/usr/bin/env", ["env", "swift", "--version"], captureOutput: true)
        if swift.status == 0, let first = swift.output.split(separator: "\n").first(where: { $0.contains("version") }) {
            info.swift = String(first)
        }
        info.peerVersions = readPeerVersions()
        return info
    }

    /// `key: value` pairs, in the order the report shows them.
    var pairs: [(String, String)] {
        [
            ("cpu", cpuModel), ("online_cpus", "\(onlineCPUs)"),
            ("allowed_cpus", allowedCPUs.map(String.init).joined(separator: ",")), ("kernel", kernel),
            ("backend", backend), ("io_uring_setup", ringSetup), ("liburing", liburing), ("swift", swift),
        ] + peerVersions
    }
}

func cpuModelName() -> String {
    guard let file = fopen("/proc/cpuinfo", "r") else { return "unknown CPU" }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 1024)
    while fgets(&line, 1024, file) != nil {
        let text = line.withUnsafeBufferPointer {
            String(decoding: UnsafeRawBufferPointer($0).prefix { $0 != 0 }, as: UTF8.self)
        }
        if text.hasPrefix("model name"), let colon = text.firstIndex(of: ":") {
            return text[text.index(after: colon)...].trimmingCharacters()
        }
    }
    return "unknown CPU"
}

/// The CPUs in this process's affinity mask, from /proc/self/status (`Cpus_allowed_list: 0-3,6`).
func readAllowedCPUs() -> [Int] {
    guard let file = fopen("/proc/self/status", "r") else { return [] }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, 4096, file) != nil {
        let text = line.withUnsafeBufferPointer {
            String(decoding: UnsafeRawBufferPointer($0).prefix { $0 != 0 }, as: UTF8.self)
        }
        guard text.hasPrefix("Cpus_allowed_list:"), let colon = text.firstIndex(of: ":") else { continue }
        var cpus: [Int] = []
        for range in text[text.index(after: colon)...].trimmingCharacters().split(separator: ",") {
            let ends = range.split(separator: "-").compactMap { Int($0) }
            if ends.count == 1 { cpus.append(ends[0]) }
            if ends.count == 2, ends[0] <= ends[1] { cpus += Array(ends[0]...ends[1]) }
        }
        return cpus
    }
    return []
}

/// liburing's version from the shared library's file name (liburing.so.2.3 → 2.3).
private func liburingVersion() -> String {
    for directory in ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"] {
        guard let handle = opendir(directory) else { continue }
        defer { closedir(handle) }
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            let prefix = "liburing.so.2."
            if name.hasPrefix(prefix), name.dropFirst(prefix.count).allSatisfy({ $0.isNumber || $0 == "." }) {
                return "2." + name.dropFirst(prefix.count)
            }
        }
    }
    return "unknown"
}

/// The versions the peer package resolved (swift-nio, hummingbird), if it was built.
private func readPeerVersions() -> [(String, String)] {
    guard let file = fopen(Peers.packageDirectory + "/Package.resolved", "r") else { return [] }
    defer { fclose(file) }
    var text = ""
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, 4096, file) != nil {
        text += line.withUnsafeBufferPointer {
            String(decoding: UnsafeRawBufferPointer($0).prefix { $0 != 0 }, as: UTF8.self)
        }
    }
    var versions: [(String, String)] = []
    for package in ["swift-nio", "hummingbird"] {
        guard let identity = text.firstRange(of: "\"identity\" : \"\(package)\"") else { continue }
        let rest = text[identity.upperBound...]
        guard let key = rest.firstRange(of: "\"version\" : \""),
            let end = rest[key.upperBound...].firstIndex(of: "\"")
        else { continue }
        versions.append((package, String(rest[key.upperBound..<end])))
    }
    return versions
}

/// The whole machine's CPU time from /proc/stat's first line, seconds: busy (everything but idle
/// and iowait) and steal.
struct CPUSample {
    var busy = 0.0
    var steal = 0.0
    var taken = 0.0

    static func now() -> CPUSample {
        var sample = CPUSample(taken: Double(nowNanoseconds()) / 1e9)
        guard let file = fopen("/proc/stat", "r") else { return sample }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 512)
        guard fgets(&line, 512, file) != nil else { return sample }
        let text = line.withUnsafeBufferPointer {
            String(decoding: UnsafeRawBufferPointer($0).prefix { $0 != 0 }, as: UTF8.self)
        }
        // cpu user nice system idle iowait irq softirq steal guest guest_nice
        let ticks = text.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard ticks.count >= 8 else { return sample }
        let hertz = Double(sysconf(Int32(_SC_CLK_TCK)))
        sample.busy = (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / hertz
        sample.steal = ticks[7] / hertz
        return sample
    }
}
