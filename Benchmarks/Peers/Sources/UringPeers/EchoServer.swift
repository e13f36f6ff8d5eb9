import NIOCore
import NIOPosix

// `uring-peers echo-server`: SwiftNIO echo servers on one event loop, the two ways NIO's
// documentation shows: a ChannelHandler that writes every read back and flushes when the reads
// of one event-loop tick are done, and the async API (NIOAsyncChannel, one child task per
// connection). Both set TCP_NODELAY, as swift-uring's echo server does.

private final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

func runEchoServer(_ options: Options) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let bootstrap = ServerBootstrap(group: group)
        .serverChannelOption(.backlog, value: 4096)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    switch options.system {
    case "nio-handler":
        let channel = try await bootstrap.childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
        }.bind(host: options.host, port: options.port).get()
        try await channel.closeFuture.get()
    case "nio-async":
        let server = try await bootstrap.bind(host: options.host, port: options.port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { tasks in
                for try await connection in inbound {
                    tasks.addTask {
                        try? await connection.executeThenClose { input, output in
                            for try await buffer in input { try await output.write(buffer) }
                        }
                    }
                }
            }
        }
    default:
        fail("unknown system '\(options.system)' for echo-server (nio-handler or nio-async)")
    }
}
