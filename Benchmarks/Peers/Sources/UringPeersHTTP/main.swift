// uring-peers-http: Hummingbird 2 serving what `uring-api` serves, the peer of the handler API's
// benchmarks (Benchmarks/scripts/http-compare.sh --api).
//
//   uring-peers-http --port P [--root DIR]
//
//   GET  /plaintext   Hello, World! (text/plain)
//   GET  /json        {"message":"Hello, World!"} (Codable, Hummingbird's JSON encoder)
//   POST /echo        the request body back, streamed
//   GET  /files/...   the files under DIR (FileMiddleware)
import Hummingbird

#if canImport(Glibc)
import Glibc
#endif

var port = 8080
var root: String?
var args = CommandLine.arguments.dropFirst().makeIterator()
while let argument = args.next() {
    switch argument {
    case "--port": port = Int(args.next() ?? "") ?? port
    case "--root": root = args.next()
    default:
        print("usage: uring-peers-http --port P [--root DIR]")
        exit(64)
    }
}

struct Message: ResponseCodable {
    var message: String
}

let router = Router()
if let root {
    router.add(middleware: FileMiddleware(root, urlBasePath: "/files", searchForIndexHtml: true))
}
router.get("/plaintext") { _, _ in "Hello, World!" }
router.get("/json") { _, _ in Message(message: "Hello, World!") }
router.post("/echo") { request, _ -> Response in
    Response(status: .ok, body: ResponseBody(asyncSequence: request.body))
}
let app = Application(
    router: router,
    configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "uring-peers-http")
)
try await app.runService()
