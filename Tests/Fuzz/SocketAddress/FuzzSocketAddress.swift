// libFuzzer target for `SocketAddress` parsing (see Tests/Fuzz/HTTPParser for how it is built and
// replayed). Checked besides "no crash": an address that parses prints back to text that parses
// to the same address, and its parts are consistent with its family.
import Uring
import UringFuzzSupport

func fuzzSocketAddress(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    let text = String(decoding: input, as: UTF8.self)
    if let address = try? SocketAddress(text) { checkRoundTrip(address) }
    if let address = try? SocketAddress(unixPath: text) { checkRoundTrip(address) }
    // The first two bytes as a port (0...65535, and beyond with the third), the rest as a host.
    if input.count >= 3 {
        let port = Int(input[0]) << 8 | Int(input[1]) + (input[2] == 0xFF ? 65536 : 0)
        let host = String(decoding: input[3...], as: UTF8.self)
        if let address = try? SocketAddress(host: host, port: port) {
            precondition(address.port == port, "port changed")
            checkRoundTrip(address)
        }
    }
    return 0
}

func checkRoundTrip(_ address: SocketAddress) {
    switch address.family {
    case .ipv4, .ipv6:
        precondition(address.host != nil && address.port != nil && address.path == nil, "IP address parts")
        precondition((0...65535).contains(address.port!), "port out of range")
    case .unix:
        precondition(address.host == nil && address.port == nil && address.path != nil, "Unix address parts")
        precondition(address.path!.utf8.count <= SocketAddress.maximumUnixPathLength && !address.path!.utf8.contains(0))
    }
    let text = address.description
    guard let again = try? SocketAddress(text) else { preconditionFailure("\(text) does not parse back") }
    precondition(again == address, "\(text) parses back to \(again)")
}

#if URING_FUZZING
// libFuzzer's runtime refers to this symbol even when its driver is given the callback.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzSocketAddress(data, size) }
#endif

@main
struct FuzzMain {
    static func main() { fuzzMain(fuzzSocketAddress) }
}
