/// A log-linear latency histogram (16 sub-buckets per power of two: about 6 % resolution) in a
/// fixed array, so recording allocates nothing.
struct Histogram {
    static let subBits = 4
    static let bucketCount = 64 << subBits
    var counts: [UInt64]
    var total: UInt64 = 0

    init() { counts = [UInt64](repeating: 0, count: Histogram.bucketCount) }

    @inline(__always)
    static func index(_ value: UInt64) -> Int {
        let v = max(value, 1)
        let exponent = 63 - v.leadingZeroBitCount
        if exponent < subBits { return Int(v) }
        let sub = Int((v >> UInt64(exponent - subBits)) & ((1 << subBits) - 1))
        return ((exponent - subBits + 1) << subBits) + sub
    }

    /// The lower bound of bucket `index`.
    static func value(_ index: Int) -> UInt64 {
        if index < (1 << subBits) { return UInt64(index) }
        let exponent = (index >> subBits) + subBits - 1
        let sub = UInt64(index & ((1 << subBits) - 1))
        return (UInt64(1) << UInt64(exponent)) | (sub << UInt64(exponent - subBits))
    }

    @inline(__always)
    mutating func record(_ nanoseconds: UInt64) {
        counts.withUnsafeMutableBufferPointer { $0[Histogram.index(nanoseconds)] &+= 1 }
        total &+= 1
    }

    mutating func merge(_ other: Histogram) {
        for i in 0..<counts.count { counts[i] &+= other.counts[i] }
        total &+= other.total
    }

    /// The value at quantile `q` (0...1), in nanoseconds (the middle of its bucket).
    func quantile(_ q: Double) -> Double {
        guard total > 0 else { return 0 }
        let rank = UInt64((Double(total) * q).rounded(.up))
        var seen: UInt64 = 0
        for i in 0..<counts.count {
            seen &+= counts[i]
            if seen >= max(rank, 1) {
                let low = Double(Histogram.value(i))
                let high = Double(Histogram.value(i + 1))
                return (low + high) / 2
            }
        }
        return Double(Histogram.value(counts.count - 1))
    }
}
