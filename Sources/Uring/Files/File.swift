import Glibc
import SystemPackage

/// An open file (or any readable/writable descriptor: a pipe, a device) whose I/O runs on a ring.
///
/// `File` is a small `Sendable` value around a `FileDescriptor`: copy it into as many tasks as you
/// like and read from all of them at once. It does not close itself: call ``close()``, or use
/// ``withFile(at:_:options:permissions:_:)`` to have the file closed when a scope ends.
///
/// ```swift
/// let file = try await File.open("/var/log/syslog")
/// defer { Task { try? await file.close() } }
/// let firstKiB = try await file.read(upTo: 1024, at: 0)
/// ```
///
/// ## Where the I/O runs
/// Called from a task on a ``RingExecutor`` the operation goes straight onto that ring. Called from
/// anywhere else (the main actor, the global pool) the task hops onto the shared ring
/// (``RingExecutor/shared()``) for the operation and back.
///
/// ## Buffers
/// Methods that take an `UnsafeMutableRawBufferPointer` *lend* it to the kernel: the call never
/// returns, not even when the task is cancelled or the deadline passes, before the kernel has
/// finished with the buffer. Keep it valid for the duration of the call; after that it is yours.
///
/// ## Short reads and end of file
/// ``read(into:at:timeout:)`` is one `read`: it may return fewer bytes than asked (a pipe with
/// less data, a read crossing end of file) and returns 0 exactly at end of file.
/// ``read(upTo:at:)`` and ``readAll()`` loop until the count is reached or end of file.
/// ``read(exactlyInto:at:)`` throws ``IOError/Code/unexpectedEndOfFile`` if the file ends first.
/// Writes always write every byte (looping over short writes).
public struct File: Sendable, Hashable {
    /// The underlying descriptor. Closing it yourself makes every later call on this `File`
    /// fail with `EBADF`, or worse, act on whatever file reuses the number.
    public let descriptor: FileDescriptor

    /// Wraps an open descriptor (a pipe end, a file opened elsewhere). Ownership passes to the
    /// `File` in the sense that ``close()`` closes it.
    ///
    /// ```swift
    /// let stdin = File(descriptor: .standardInput)
    /// let n = try await stdin.read(into: buffer)
    /// ```
    public init(descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    /// The kernel's limit for one read or write; longer buffers are served by several.
    static let maximumTransfer = 0x7fff_f000

    /// Opens (or creates) the file at `path`.
    ///
    /// ```swift
    /// let log = try await File.open("app.log", .writeOnly, options: [.create, .append],
    ///                               permissions: [.ownerReadWrite, .groupRead])
    /// ```
    ///
    /// - Parameters:
    ///   - path: Absolute, or relative to the current directory.
    ///   - mode: Read, write, or both.
    ///   - options: `.create`, `.exclusiveCreate`, `.truncate`, `.append`, `.noFollow`, …
    ///     (`O_CLOEXEC` is always added).
    ///   - permissions: The mode of a created file; defaults to `0o644` when `.create` is given.
    /// - Throws: ``IOError`` for ``IOError/Operation/open``: `.systemCall` with the errno
    ///   (`ENOENT`, `EACCES`, `EEXIST`, `EISDIR`, …); `.cancelled` if the task is cancelled first. An
    ///   open that completed in the kernel before the cancel took effect is returned, never dropped,
    ///   so no descriptor leaks.
    public static func open(
        _ path: FilePath,
        _ mode: FileDescriptor.AccessMode = .readOnly,
        options: FileDescriptor.OpenOptions = [],
        permissions: FilePermissions? = nil
    ) async throws(IOError) -> File {
        do throws(IOError) {
            let cPath = try CPath(path, .open)
            defer { cPath.free() }
            let flags = mode.rawValue | options.rawValue | O_CLOEXEC
            let createMode = mode_t(
                (permissions ?? (options.contains(.create) ? [.ownerReadWrite, .groupRead, .otherRead] : [])).rawValue)
            let open = unsafe OpenOperation(path: cPath.pointer, flags: flags, mode: createMode)
            let fd = try await open.run()
            OpenOperation.noteOpened(fd, flags: flags)
            return File(descriptor: FileDescriptor(rawValue: fd))
        } catch {
            throw error.about(.path(path))
        }
    }

    /// Opens `path` for reading relative to `directory`, and only if it resolves to something
    /// inside that directory: `..` that would climb out of it, an absolute path, a symbolic link
    /// that points outside, or a `/proc` magic link all fail (`openat2` with `RESOLVE_BENEATH`
    /// and `RESOLVE_NO_MAGICLINKS`, checked by the kernel during resolution, so no race with a
    /// concurrent rename can defeat it). What a static file server needs.
    ///
    /// ```swift
    /// let root = try await File.open("/srv/www", options: .directory)
    /// let page = try await File.open("docs/index.html", beneath: root)
    /// ```
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/open``: `EXDEV` when the path would leave
    ///   `directory`, `ELOOP` for a magic link, `ENOENT`, `EACCES`, … An empty path opens
    ///   `directory` itself.
    public static func open(
        _ path: FilePath, beneath directory: File, options: FileDescriptor.OpenOptions = []
    ) async throws(IOError) -> File {
        let cPath = try CPath(path.isEmpty ? "." : path, .open)
        defer { cPath.free() }
        do throws(IOError) {
            return try await open(cPath, beneath: directory, options: options)
        } catch {
            throw error.about(.path(path))
        }
    }

    /// Opens the relative path whose bytes are `pathBytes` beneath `directory`, as
    /// ``open(_:beneath:options:)`` does, without making a `FilePath` first: what a server that
    /// decodes request paths into a buffer of its own uses (once warm, it allocates nothing).
    ///
    /// ```swift
    /// let decoded: [UInt8] = Array("docs/index.html".utf8)
    /// let page = try await File.open(pathBytes: decoded, beneath: root)
    /// ```
    ///
    /// - Throws: ``IOError`` as ``open(_:beneath:options:)`` does; ``IOError/Code/invalidArgument``
    ///   for a NUL byte in `pathBytes`, `ENAMETOOLONG` for `PATH_MAX` bytes or more.
    public static func open(
        pathBytes: some Collection<UInt8>, beneath directory: File, options: FileDescriptor.OpenOptions = []
    ) async throws(IOError) -> File {
        let cPath = pathBytes.isEmpty ? try CPath(".", .open) : try CPath(bytes: pathBytes, .open)
        defer { cPath.free() }
        do throws(IOError) {
            return try await open(cPath, beneath: directory, options: options)
        } catch {
            throw error.about(.path(FilePath(String(decoding: pathBytes, as: UTF8.self))))
        }
    }

    private static func open(
        _ cPath: CPath, beneath directory: File, options: FileDescriptor.OpenOptions
    ) async throws(IOError) -> File {
        // First without crossing a mount point: then the file is on the directory's file system,
        // and the ring knows what that is without asking per file (whether a `statx` of it may
        // be made on the ring's thread). A path that crosses one (`EXDEV`) is opened again
        // without the restriction; a path that leaves the directory fails both ways, as it must.
        let directoryFD = directory.descriptor.rawValue
        do throws(IOError) {
            let fd = try await open(cPath, beneath: directoryFD, options: options, sameMount: true)
            OpenOperation.noteOpened(fd, flags: options.rawValue, onFileSystemOf: directoryFD)
            return File(descriptor: FileDescriptor(rawValue: fd))
        } catch  where error.errno == .improperLink {
            let fd = try await open(cPath, beneath: directoryFD, options: options, sameMount: false)
            OpenOperation.noteOpened(fd, flags: options.rawValue)
            return File(descriptor: FileDescriptor(rawValue: fd))
        }
    }

    private static func open(
        _ cPath: CPath, beneath directory: Int32, options: FileDescriptor.OpenOptions, sameMount: Bool
    ) async throws(IOError) -> Int32 {
        // The kernel copies `how` when the entry is submitted, after this task suspended.
        let how = OpenBeneathOperation.ResolveStorage(options: options.rawValue, sameMount: sameMount)
        defer { how.free() }
        return try await unsafe OpenBeneathOperation(directory: directory, path: cPath.pointer, how: how).run()
    }

    /// Opens the file at `path`, runs `body` with it, and closes it, whether `body` returns or
    /// throws.
    ///
    /// ```swift
    /// let header = try await File.withFile(at: "data.bin") { file in
    ///     try await file.read(upTo: 16, at: 0)
    /// }
    /// ```
    ///
    /// - Throws: what ``open(_:_:options:permissions:)`` or `body` throws, or the error of the
    ///   final close (only when `body` succeeded).
    public static func withFile<Result>(
        at path: FilePath,
        _ mode: FileDescriptor.AccessMode = .readOnly,
        options: FileDescriptor.OpenOptions = [],
        permissions: FilePermissions? = nil,
        _ body: (File) async throws -> Result
    ) async throws -> Result {
        let file = try await File.open(path, mode, options: options, permissions: permissions)
        return try await runClosing(after: { try await body(file) }, file.close)
    }

    /// Closes the descriptor.
    ///
    /// ```swift
    /// let file = try await File.open("data.bin")
    /// // ... use it ...
    /// try await file.close()
    /// ```
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/close`` (`EBADF` for a descriptor that is not
    ///   open; `EIO` and friends from the file system; ``IOError/Code/closed`` when another task is
    ///   closing it right now). Like `close(2)`, the descriptor is released even when an error is
    ///   reported.
    ///
    /// Operations pending on the descriptor (a read on a pipe, in any task, on any ring) end
    /// first, with ``IOError/Code/closed``; the kernel has let go of their buffers before the
    /// descriptor is closed.
    ///
    /// A close is never skipped: it runs even when the calling task is already cancelled (cleanup
    /// code often runs in a cancelled task), and when the ring is shutting down or cannot be set
    /// up it falls back to `close(2)` on the calling thread.
    public func close() async throws(IOError) {
        try await RingExecutor.closeDescriptor(descriptor.rawValue, operation: .close)
    }

    /// Flushes the file's data and metadata to storage (`fsync`), or with `dataOnly` its data and
    /// only the metadata needed to read it back (`fdatasync`).
    ///
    /// ```swift
    /// try await file.write(record, at: offset)
    /// try await file.sync(dataOnly: true)
    /// ```
    public func sync(dataOnly: Bool = false) async throws(IOError) {
        let fd = descriptor.rawValue
        _ = try await SyncOperation(fd: fd, dataOnly: dataOnly).run()
    }
}

/// A NUL-terminated copy of a path that stays valid across suspension (the kernel reads it when
/// the SQE is submitted, after the task has suspended): in a ``ScratchBlocks`` block (no
/// allocation once the free list is warm), or `strdup`'d when longer than a block.
@safe struct CPath: @unchecked Sendable {
    // SAFETY (@safe): `pointer` is a copy owned by its creator (a scratch block, or strdup'd), given back or freed
    // (once) after the last operation that reads it completed.
    // @unchecked Sendable: an immutable, owned C string, freed by its creator after the last
    // operation that reads it has completed.
    let pointer: UnsafeMutablePointer<CChar>
    private let pooled: Bool

    init(_ path: FilePath, _ operation: IOError.Operation) throws(IOError) {
        let length = unsafe path.withPlatformString { unsafe strlen($0) }
        if length < ScratchBlocks.size {
            let block = unsafe ScratchBlocks.take()
            // SAFETY: length + 1 <= ScratchBlocks.size bytes, copied with the NUL.
            unsafe path.withPlatformString { unsafe block.copyMemory(from: $0, byteCount: length + 1) }
            unsafe pointer = unsafe block.assumingMemoryBound(to: CChar.self)
            pooled = true
        } else {
            let copy = unsafe path.withPlatformString { unsafe strdup($0) }
            guard let copy = unsafe copy else { throw IOError.system(ENOMEM, operation) }
            unsafe pointer = unsafe copy
            pooled = false
        }
    }

    /// The path whose bytes are `bytes` (no NUL among them).
    ///
    /// - Throws: `EINVAL` (``IOError/Code/invalidArgument``) for a NUL byte, `ENAMETOOLONG` for a
    ///   path of `PATH_MAX` bytes or more.
    init(bytes: some Collection<UInt8>, _ operation: IOError.Operation) throws(IOError) {
        let count = bytes.count
        guard count < ScratchBlocks.size else { throw IOError.system(ENAMETOOLONG, operation) }
        guard !bytes.contains(0) else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: operation) }
        let block = unsafe ScratchBlocks.take()
        let target = unsafe UnsafeMutableRawBufferPointer(start: block, count: ScratchBlocks.size)
        // SAFETY: count + 1 <= ScratchBlocks.size bytes.
        _ = unsafe target.initializeMemory(as: UInt8.self, from: bytes)
        unsafe target[count] = 0
        unsafe pointer = unsafe block.assumingMemoryBound(to: CChar.self)
        pooled = true
    }

    func free() {
        if pooled {
            unsafe ScratchBlocks.give(UnsafeMutableRawPointer(pointer))
        } else {
            unsafe Glibc.free(pointer)
        }
    }
}
