import Testing

@testable import Uring

extension IntegrationTests {
    /// The blocks operations borrow for paths and `open_how`s (serialized with the kernel suites,
    /// which open files and so borrow blocks too).
    @Suite("Scratch blocks")
    struct ScratchBlocksTests {
        /// Blocks lent at once come back into the list, however many there were (up to the
        /// bound): the next burst of the same size reuses every one of them and allocates none.
        @Test func aBurstIsKeptWholeForTheNext() {
            let burst = 200
            let first = (0..<burst).map { _ in ScratchBlocks.take() }
            for block in first { ScratchBlocks.give(block) }
            #expect(ScratchBlocks.snapshot.lent == 0)
            #expect(ScratchBlocks.snapshot.free >= burst, "all \(burst) kept (a fixed 64 kept 64)")
            let second = (0..<burst).map { _ in ScratchBlocks.take() }
            #expect(Set(second) == Set(first), "the same blocks again, none new")
            for block in second { ScratchBlocks.give(block) }
        }

        /// However many are lent at once, the list keeps at most `maximumKept` (4 MiB).
        @Test func theListIsBounded() {
            let blocks = (0..<(ScratchBlocks.maximumKept + 100)).map { _ in ScratchBlocks.take() }
            for block in blocks { ScratchBlocks.give(block) }
            let snapshot = ScratchBlocks.snapshot
            #expect(snapshot.free == ScratchBlocks.maximumKept && snapshot.limit == ScratchBlocks.maximumKept)
            #expect(snapshot.lent == 0)
        }
    }
}
