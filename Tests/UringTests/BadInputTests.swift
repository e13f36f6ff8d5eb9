import Glibc
import SystemPackage
import Testing

@testable import Uring

extension IntegrationTests {
    /// Bad input gets a typed error or a defined result, never a crash or a hang.
    @Suite("Bad input")
    struct BadInput {
        @Test func readingAClosedDescriptorIsEBADF() async throws {
            let closed = closedDescriptor()
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
            defer { buffer.deallocate() }
            await #expect(throws: IOError.system(EBADF, .read)) {
                _ = try await closed.read(into: buffer, at: 0)
            }
            await #expect(throws: IOError.system(EBADF, .close)) { try await closed.close() }
            await #expect(throws: IOError.system(EBADF, .stat)) { _ = try await closed.status() }
        }

        @Test func readingADirectoryIsEISDIR() async throws {
            let dir = try await File.open("/tmp", .readOnly, options: [.directory])
            defer { _ = Glibc.close(dir.descriptor.rawValue) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
            defer { buffer.deallocate() }
            await #expect(throws: IOError.system(EISDIR, .read)) { _ = try await dir.read(into: buffer, at: 0) }
            await #expect(throws: IOError.system(EISDIR, .read)) { _ = try await dir.readAll() }
        }

        @Test func missingPathIsENOENT() async throws {
            await #expect(throws: IOError.system(ENOENT, .open)) { _ = try await File.open("/nonexistent/uring/file") }
            await #expect(throws: IOError.system(ENOENT, .stat)) { _ = try await FileSystem.status(of: "/nonexistent") }
            await #expect(throws: IOError.system(ENOENT, .remove)) { try await FileSystem.remove("/nonexistent/x") }
            await #expect(throws: IOError.system(ENOENT, .open)) { _ = try await File.readAll(at: "") }
        }

        @Test func negativeOffsetsAndCountsAreInvalidArguments() async throws {
            let file = try await File.open("/etc/hostname")
            defer { _ = Glibc.close(file.descriptor.rawValue) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
            defer { buffer.deallocate() }
            let invalidRead = IOError(.invalidArgument, errno: .invalidArgument, operation: .read)
            await #expect(throws: invalidRead) { _ = try await file.read(into: buffer, at: -1) }
            await #expect(throws: invalidRead) { _ = try await file.read(upTo: 8, at: -5) }
            await #expect(throws: invalidRead) { _ = try await file.read(upTo: -1, at: 0) }
            await #expect(throws: invalidRead) { try await file.read(exactlyInto: buffer, at: .min) }
            await #expect(throws: IOError(.invalidArgument, errno: .invalidArgument, operation: .write)) {
                try await file.write(contentsOf: [1], at: -1)
            }
        }

        @Test func zeroLengthReadReturnsZero() async throws {
            let file = try await File.open("/etc/hostname")
            defer { _ = Glibc.close(file.descriptor.rawValue) }
            let empty = UnsafeMutableRawBufferPointer(start: nil, count: 0)
            #expect(try await file.read(into: empty, at: 0) == 0)
            #expect(try await file.read(upTo: 0, at: 0) == [])
        }

        @Test func lengthLargerThanTheFileIsAShortRead() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let file = try await File.open(dir.file("small"), .readWrite, options: [.create])
            defer { _ = Glibc.close(file.descriptor.rawValue) }
            try await file.write(contentsOf: Array(0..<100), at: 0)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
            defer { buffer.deallocate() }
            #expect(try await file.read(into: buffer, at: 0) == 100)
            #expect(try await file.read(into: buffer, at: 100) == 0, "0 exactly at end of file")
            #expect(try await file.read(into: buffer, at: 1 << 40) == 0, "0 past end of file")
            #expect(try await file.read(upTo: 1 << 20, at: 90) == Array(90..<100))
            await #expect(throws: IOError(.unexpectedEndOfFile, operation: .read)) {
                try await file.read(exactlyInto: buffer, at: 0)
            }
        }

        @Test func writingToAReadOnlyFileIsEBADF() async throws {
            let file = try await File.open("/etc/hostname")
            defer { _ = Glibc.close(file.descriptor.rawValue) }
            await #expect(throws: IOError.system(EBADF, .write)) { try await file.write(contentsOf: [1], at: 0) }
        }

        @Test func ringSetupRejectsNonsense() {
            #expect(throws: IOError(.invalidArgument, errno: .invalidArgument, operation: .setup)) {
                _ = try RingExecutor(entries: 0)
            }
            #expect(throws: IOError(.invalidArgument, errno: .invalidArgument, operation: .setup)) {
                _ = try RingExecutor(entries: 1 << 20)
            }
        }
    }
}
