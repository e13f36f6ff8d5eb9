@_exported import struct SystemPackage.Errno
@_exported import struct SystemPackage.FileDescriptor
// The swift-system types that swift-uring's API takes and returns, re-exported: `import Uring`
// is enough to write `let path: FilePath = ...` or to catch an `Errno`, with no second import and
// no "cannot find type 'FilePath' in scope". Only these types, not all of SystemPackage (its
// synchronous `FileDescriptor.read`/`write` are not what an async program on a ring should call).
// Docs/DESIGN.md explains why re-exporting beats `String` overloads.
@_exported import struct SystemPackage.FilePath
@_exported import struct SystemPackage.FilePermissions
