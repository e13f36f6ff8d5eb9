import Uring

// `uring-bench map`: mapConcurrently against the task group a user would write by hand.

/// `elements` no-op transforms at `limit` at once, in input order, through a hand-written task
/// group (at most `limit` children; results reordered by index): the baseline.
func handWrittenMap(elements: Int, limit: Int) async -> Int {
    await withTaskGroup(of: (Int, Int).self) { group in
        var next = 0
        var pending: [Int: Int] = [:]
        var emitted = 0
        var sum = 0
        while next < min(limit, elements) {
            let index = next
            group.addTask { (index, index) }
            next += 1
        }
        while let (index, value) = await group.next() {
            pending[index] = value
            while let ready = pending.removeValue(forKey: emitted) {
                sum &+= ready
                emitted += 1
            }
            if next < elements {
                let index = next
                group.addTask { (index, index) }
                next += 1
            }
        }
        return sum
    }
}

func runMap(options: Options) async throws -> String {
    let elements = options.entries
    let limit = options.concurrency ?? 64
    func timed(_ body: () async throws -> Int) async rethrows -> Double {
        let started = nowNanoseconds()
        let sum = try await body()
        precondition(sum == elements * (elements - 1) / 2, "wrong result")
        return Double(nowNanoseconds() - started) / Double(elements)
    }
    var ours: [Double] = []
    var baseline: [Double] = []
    for _ in 0..<(options.rounds ?? 5) {
        ours.append(
            try await timed {
                var sum = 0
                for try await value in (0..<elements).mapConcurrently(limit: limit, { $0 }) { sum &+= value }
                return sum
            })
        if options.baseline { baseline.append(await timed { await handWrittenMap(elements: elements, limit: limit) }) }
    }
    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    let oursNs = median(ours)
    var parts = [
        "scenario=map", "elements=\(elements)", "limit=\(limit)", "rounds=\(options.rounds ?? 5)",
        "ns_per_element=\(format(oursNs, decimals: 1))",
    ]
    if !baseline.isEmpty {
        let baselineNs = median(baseline)
        parts += [
            "baseline=task_group", "baseline_ns_per_element=\(format(baselineNs, decimals: 1))",
            "overhead_ns_per_element=\(format(oursNs - baselineNs, decimals: 1))",
        ]
    }
    return parts.joined(separator: " ")
}
