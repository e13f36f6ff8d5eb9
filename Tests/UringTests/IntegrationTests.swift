import Testing

/// The parent of every suite that uses the kernel. Serialized, because several tests count the
/// process's open descriptors and operation-table entries before and after.
@Suite(.serialized, .enabled(if: ringAvailable, "io_uring is unavailable on this machine"))
struct IntegrationTests {}
