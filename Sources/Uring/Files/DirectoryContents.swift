import Glibc
import SystemPackage

/// One entry of a directory listing: its name, its kind and inode number as the directory
/// records them, and its full status when the listing asked for it.
///
/// ```swift
/// for try await entry in FileSystem.contents(of: "/var/log") where entry.kind == .regular {
///     print(entry.name)
/// }
/// ```
public struct DirectoryEntry: Sendable, Hashable {
    /// The entry's name in its directory (one path component, never "." or "..").
    public var name: String
    /// The kind the directory records (`d_type`). ``FileStatus/Kind/unknown`` on file systems
    /// that do not record it; a listing with `includingStatus` fills it in from the status.
    public var kind: FileStatus.Kind
    /// The inode number the directory records.
    public var inode: UInt64
    /// The status, boxed: an entry stays small to copy when the listing did not ask for it.
    private var statusBox: StatusBox?

    /// The entry's status (`statx`, not following a symbolic link), when the listing was asked
    /// for it with `includingStatus: true`; otherwise nil.
    public var status: FileStatus? {
        get { statusBox?.status }
        set { statusBox = newValue.map(StatusBox.init) }
    }

    public init(name: String, kind: FileStatus.Kind, inode: UInt64, status: FileStatus? = nil) {
        self.name = name
        self.kind = kind
        self.inode = inode
        self.statusBox = status.map(StatusBox.init)
    }

    private final class StatusBox: Sendable, Hashable {
        let status: FileStatus
        init(_ status: FileStatus) { self.status = status }
        static func == (lhs: StatusBox, rhs: StatusBox) -> Bool { lhs.status == rhs.status }
        func hash(into hasher: inout Hasher) { hasher.combine(status) }
    }
}

extension FileSystem {
    /// The entries of the directory at `directory`, read as they are consumed.
    ///
    /// ```swift
    /// var sizes = 0 as Int64
    /// for try await entry in FileSystem.contents(of: "/srv/uploads", includingStatus: true) {
    ///     sizes += entry.status?.size ?? 0
    /// }
    /// ```
    ///
    /// io_uring has no operation for reading a directory: the records are read with
    /// `getdents64`, 256 KiB (thousands of entries) at a time, on ``BlockingPool/shared``, on both
    /// drivers, so no ring ever blocks on a slow directory. While the consumer goes through one
    /// batch, the next is read on the pool. The directory is opened on the ring, and the
    /// per-entry `statx` of `includingStatus` runs on the ring.
    ///
    /// - Order is whatever the file system gives (hash order on ext4, not alphabetical).
    /// - Entries created or removed while the listing runs may or may not appear; each entry that
    ///   existed throughout appears exactly once. With `includingStatus`, an entry removed between
    ///   the read of its record and its `statx` is skipped.
    /// - The directory's descriptor is closed when the sequence ends or throws; when the iterator
    ///   is dropped before that, as soon as the batch being read ahead (if any) is in.
    ///
    /// - Parameters:
    ///   - directory: The directory to list.
    ///   - includingStatus: Also fetch each entry's ``DirectoryEntry/status`` (one `statx` each).
    /// - Throws: ``IOError`` for ``IOError/Operation/readDirectory`` from `next()`: `ENOTDIR` for a
    ///   file, `ENOENT`, `EACCES`, …, or ``IOError/Code/cancelled`` when the consuming task is
    ///   cancelled (checked between batches).
    public static func contents(of directory: FilePath, includingStatus: Bool = false) -> DirectoryContents {
        DirectoryContents(directory: directory, includingStatus: includingStatus)
    }
}

/// The entries of a directory. See ``FileSystem/contents(of:includingStatus:)``.
public struct DirectoryContents: AsyncSequence, Sendable {
    public typealias Element = DirectoryEntry
    public typealias Failure = IOError

    let directory: FilePath
    let includingStatus: Bool
    /// Bytes of records per `getdents64` (tests make it small, to list across many batches).
    var batchBytes = DirectoryReader.defaultBufferSize

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(directory: directory, includingStatus: includingStatus, batchBytes: batchBytes)
    }

    /// Reads a batch of records when the last one is used up.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let directory: FilePath
        @usableFromInline let includingStatus: Bool
        let batchBytes: Int
        @usableFromInline var reader: DirectoryReader?
        var finished = false

        init(directory: FilePath, includingStatus: Bool, batchBytes: Int) {
            self.directory = directory
            self.includingStatus = includingStatus
            self.batchBytes = batchBytes
        }

        /// Runs on the caller's executor (`nonisolated(nonsending)`): an entry already read is
        /// handed out with no executor check at all. A `for await` loop calls
        /// ``next(isolation:)`` instead, whose isolated parameter costs one executor check per
        /// entry (about a third of the consumer's time in `uring-bench list`); a hot loop can call
        /// this one directly:
        ///
        /// ```swift
        /// var entries = FileSystem.contents(of: "/srv/uploads").makeAsyncIterator()
        /// while let entry = try await entries.next() { names.append(entry.name) }
        /// ```
        @inlinable
        public mutating func next() async throws(IOError) -> DirectoryEntry? {
            if !includingStatus, let reader, let entry = reader.nextEntry() { return entry }
            return try await nextSlowly(isolation: #isolation)
        }

        /// Inlined into the caller, so that an entry already read is handed out by the caller's own
        /// code; only a refill (one per thousands of entries) and a status leave it.
        @inlinable
        public mutating func next(isolation actor: isolated (any Actor)?) async throws(IOError) -> DirectoryEntry? {
            if !includingStatus, let reader, let entry = reader.nextEntry() { return entry }
            return try await nextSlowly(isolation: actor)
        }

        @usableFromInline
        mutating func nextSlowly(isolation actor: isolated (any Actor)?) async throws(IOError) -> DirectoryEntry? {
            do throws(IOError) {
                while !finished, let reader = try await openedReader() {
                    guard var entry = reader.nextEntry() else {
                        if Task.isCancelled { throw IOError(.cancelled, operation: .readDirectory) }
                        if try await !reader.refill() { finish() }
                        continue
                    }
                    if includingStatus {
                        guard let status = try await Self.status(of: entry.name, in: reader.descriptor) else {
                            continue  // removed since its record was read
                        }
                        entry.status = status
                        if entry.kind == .unknown { entry.kind = status.kind }
                    }
                    return entry
                }
                return nil
            } catch {
                await reader?.settle()
                finish()
                var failure = error
                failure.operation = .readDirectory
                throw failure.about(.path(directory))
            }
        }

        /// The reader, the directory opened on the ring at the first call.
        @inline(__always)
        private mutating func openedReader() async throws(IOError) -> DirectoryReader? {
            if let reader { return reader }
            if Task.isCancelled { throw IOError(.cancelled, operation: .readDirectory) }
            let file = try await File.open(directory, .readOnly, options: [.directory])
            reader = DirectoryReader(descriptor: file.descriptor.rawValue, bufferSize: batchBytes)
            return reader
        }

        /// Lets the reader go: its descriptor is closed once no read of it is in flight.
        private mutating func finish() {
            finished = true
            reader = nil
        }

        private static func status(of name: String, in directory: Int32) async throws(IOError) -> FileStatus? {
            let path = try CPath(FilePath(name), .stat)
            defer { path.free() }
            do {
                return try await StatOperation.status(directory: directory, path: path, flags: AT_SYMLINK_NOFOLLOW)
            } catch  where error.errno == .noSuchFileOrDirectory {
                return nil
            }
        }
    }
}
