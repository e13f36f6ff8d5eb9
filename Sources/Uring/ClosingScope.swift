/// Runs `body`, then `close`, whether `body` returns or throws: the one scope behind
/// `File.withFile`, `TCPListener.withListener` and `TCPConnection.closing(after:)`. A close error
/// is thrown only when `body` succeeded (otherwise `body`'s error is the one that matters).
func runClosing<Result>(
    after body: () async throws -> Result, _ close: () async throws(IOError) -> Void
) async throws -> Result {
    let result: Result
    do {
        result = try await body()
    } catch {
        try? await close()
        throw error
    }
    try await close()
    return result
}
