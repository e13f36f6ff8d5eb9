import Foundation
import NIOFileSystem
import SystemPackage

// `uring-peers list`: directory listings with Foundation and NIOFileSystem.

/// Lists again and again for `warmup`, then for `seconds`, counting entries.
func measureListing(_ options: Options, _ list: () async throws -> Int) async throws -> (entries: Int, seconds: Double)
{
    let warmupEnd = now() + options.warmup
    while now() < warmupEnd { _ = try await list() }
    let start = now()
    var entries = 0
    repeat { entries += try await list() } while now() < start + options.seconds
    return (entries, now() - start)
}

/// One listing with each system, the way its documentation shows it; every entry's name is
/// touched, as swift-uring's side does.
func lister(_ system: String, path: String) -> () async throws -> Int {
    switch system {
    case "foundation":
        return {
            var count = 0
            for name in try FileManager.default.contentsOfDirectory(atPath: path) where !name.isEmpty { count += 1 }
            return count
        }
    case "foundation-urls":
        return {
            var count = 0
            let url = URL(fileURLWithPath: path, isDirectory: true)
            for entry in try FileManager.default.contentsOfDirectory(at: url, includingPropertiesForKeys: nil)
            where !entry.lastPathComponent.isEmpty {
                count += 1
            }
            return count
        }
    case "niofs":
        return {
            try await FileSystem.shared.withDirectoryHandle(atPath: FilePath(path)) { directory in
                var count = 0
                for try await entry in directory.listContents() where !entry.name.string.isEmpty { count += 1 }
                return count
            }
        }
    case "niofs-batched":
        return {
            try await FileSystem.shared.withDirectoryHandle(atPath: FilePath(path)) { directory in
                var count = 0
                for try await batch in directory.listContents().batched() {
                    for entry in batch where !entry.name.string.isEmpty { count += 1 }
                }
                return count
            }
        }
    default:
        fail("unknown system '\(system)' (foundation, foundation-urls, niofs or niofs-batched)")
    }
}
