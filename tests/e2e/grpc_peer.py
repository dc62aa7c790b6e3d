"""Real gRPC peers for the end-to-end tests (grpcio, built on grpc-core).

  python3 grpc_peer.py server NAME [max=N] [fail=CODE:K] [tls=CERT:KEY]
                                          serves test.Echo and grpc.health.v1
                                          on 127.0.0.1:0; prints "port N"
  python3 grpc_peer.py client TARGET CMD  calls through TARGET; prints JSON
                                          (over TLS when GRPC_PEER_CA names a CA)

No generated code: the methods take and return raw bytes. test.Echo/Unary
answers "NAME:" + the request, or fails with the code a request
"fail:CODE" names; test.Echo/Serve streams N messages ("stream:N");
test.Echo/Health sets the health service's status ("SERVING" or
"NOT_SERVING"); test.Echo/Stall and StallStream (after one message) stall
for 10 s unless cancelled, and test.Echo/Cancelled says how many were.
test.Echo/Peer answers the caller's address as the server sees it (the
connection it came on); test.Echo/Bulk streams that address, 128 KiB in
16 KiB messages, then stalls like StallStream.
"""

import json
import os
import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def identity(b):
    return b


def serve(name, *opts):
    # max=N: at most N concurrent streams; fail=CODE:K: every Kth
    # test.Echo/Unary call fails with CODE.
    opts = dict(o.split("=", 1) for o in opts)
    options = []
    if "max" in opts:
        options.append(("grpc.max_concurrent_streams", int(opts["max"])))
    fail_code, fail_every = None, 0
    if "fail" in opts:
        code, every = opts["fail"].split(":")
        fail_code, fail_every = getattr(grpc.StatusCode, code), int(every)
    calls = [0]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=400), options=options)
    healthy = health.HealthServicer()
    healthy.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(healthy, server)

    def unary(request, context):
        calls[0] += 1
        if fail_every and calls[0] % fail_every == 0:
            context.abort(fail_code, "canary failure")
        if request.startswith(b"fail:"):
            code = getattr(grpc.StatusCode, request[5:].decode())
            context.abort(code, "asked to fail with " + code.name)
        return name.encode() + b":" + request

    streams = [0]

    def stream(request, context):
        # "stream:N" or "stream:N:SECONDS" between messages.
        streams[0] += 1
        parts = request.split(b":")
        pause = float(parts[2]) if len(parts) > 2 else 0
        for i in range(int(parts[1])):
            yield b"%s:%d" % (name.encode(), i)
            if pause:
                time.sleep(pause)

    cancelled = [0]

    def stall(context):
        # Up to 10 s, or until the call is cancelled (counted).
        for _ in range(200):
            if not context.is_active():
                cancelled[0] += 1
                return
            time.sleep(0.05)

    def stall_unary(request, context):
        stall(context)
        return b"late"

    def stall_stream(request, context):
        yield b"first"
        stall(context)
        yield b"late"

    def bulk(request, context):
        yield context.peer().encode()
        for _ in range(8):
            yield b"b" * 16384
        stall(context)
        yield b"late"

    sleeping = [0]

    def sleep_unary(request, context):
        sleeping[0] += 1
        time.sleep(float(request.decode()))
        return name.encode() + b":slept"

    def set_health(request, context):
        status = getattr(health_pb2.HealthCheckResponse, request.decode())
        healthy.set("", status)
        return b"ok"

    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, identity, identity),
            "Serve": grpc.unary_stream_rpc_method_handler(stream, identity, identity),
            "Health": grpc.unary_unary_rpc_method_handler(set_health, identity, identity),
            "Stall": grpc.unary_unary_rpc_method_handler(stall_unary, identity, identity),
            "Sleep": grpc.unary_unary_rpc_method_handler(sleep_unary, identity, identity),
            "StallStream": grpc.unary_stream_rpc_method_handler(stall_stream, identity, identity),
            "Bulk": grpc.unary_stream_rpc_method_handler(bulk, identity, identity),
            "Peer": grpc.unary_unary_rpc_method_handler(
                lambda request, context: context.peer().encode(), identity, identity
            ),
            "Streams": grpc.unary_unary_rpc_method_handler(
                lambda request, context: b"%d" % streams[0], identity, identity
            ),
            "Sleeping": grpc.unary_unary_rpc_method_handler(
                lambda request, context: b"%d" % sleeping[0], identity, identity
            ),
            "Cancelled": grpc.unary_unary_rpc_method_handler(
                lambda request, context: b"%d" % cancelled[0], identity, identity
            ),
            # The call's deadline as the server sees it (seconds left).
            "Remaining": grpc.unary_unary_rpc_method_handler(
                lambda request, context: b"%.3f" % (context.time_remaining() or -1.0), identity, identity
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    if "tls" in opts:
        # tls=CERT_FILE:KEY_FILE: h2 over TLS instead of h2c.
        cert, key = opts["tls"].split(":")
        pair = (open(key, "rb").read(), open(cert, "rb").read())
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([pair]))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("port %d" % port, flush=True)
    # Until the test closes stdin (or kills it): then a graceful stop,
    # GOAWAY first and up to 10 s for the calls in flight.
    sys.stdin.read()
    server.stop(10).wait()


def client(target, command, *args):
    ca = os.environ.get("GRPC_PEER_CA")
    if ca:
        # TLS to sluice, whose certificate names localhost.
        credentials = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        options = [("grpc.ssl_target_name_override", "localhost")]
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target)
    unary = channel.unary_unary("/test.Echo/Unary", identity, identity)
    out = {}
    if command == "unary":
        # N calls on this one channel: who answered, and which codes failed.
        answers, codes = {}, {}
        for i in range(int(args[0])):
            try:
                reply = unary(b"call-%d" % i, timeout=10)
                who = reply.split(b":")[0].decode()
                answers[who] = answers.get(who, 0) + 1
            except grpc.RpcError as e:
                codes[e.code().name] = codes.get(e.code().name, 0) + 1
        out = {"answers": answers, "failed": codes}
    elif command == "fail":
        try:
            unary(b"fail:" + args[0].encode(), timeout=10)
            out = {"code": "OK"}
        except grpc.RpcError as e:
            out = {"code": e.code().name, "details": e.details()}
    elif command == "big":
        size = int(args[0])
        reply = unary(b"x" * size, timeout=30)
        out = {"length": len(reply)}
    elif command == "stream":
        # N messages, PAUSE seconds apart if given: who sent each.
        serve_ = channel.unary_stream("/test.Echo/Serve", identity, identity)
        request = b"stream:" + ":".join(args).encode()
        # Long enough for the whole stream (the 10-minute soak), at least 2 minutes.
        span = int(args[0]) * float(args[1]) if len(args) > 1 else 0
        senders = [m.split(b":")[0].decode() for m in serve_(request, timeout=max(120, span + 60))]
        out = {"messages": len(senders), "senders": sorted(set(senders))}
    elif command == "streams":
        count = channel.unary_unary("/test.Echo/Streams", identity, identity)
        out = {"streams": int(count(b"", timeout=5))}
    elif command == "health":
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            out = {"status": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}
        except grpc.RpcError as e:
            out = {"code": e.code().name}
    elif command == "concurrent":
        # N calls of test.Echo/Sleep (SECONDS each) at once on this channel.
        sleep = channel.unary_unary("/test.Echo/Sleep", identity, identity)
        calls = [sleep.future(args[1].encode(), timeout=60) for _ in range(int(args[0]))]
        codes = {}
        for c in calls:
            try:
                c.result()
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            codes[code] = codes.get(code, 0) + 1
        out = {"codes": codes}
    elif command == "sleeping":
        count = channel.unary_unary("/test.Echo/Sleeping", identity, identity)
        out = {"sleeping": int(count(b"", timeout=5))}
    elif command == "flip":
        # A slow server stream in flight; N calls; a line from stdin (the
        # test flips the weights); N calls; then the stream's end.
        n = int(args[0])
        serve_ = channel.unary_stream("/test.Echo/Serve", identity, identity)
        stream = serve_(b"stream:40:0.05", timeout=60)
        first = next(stream)

        def calls():
            answers = {}
            for i in range(n):
                who = unary(b"call", timeout=10).split(b":")[0].decode()
                answers[who] = answers.get(who, 0) + 1
            return answers

        print(json.dumps({"before": calls()}), flush=True)
        sys.stdin.readline()
        after = calls()
        rest = list(stream)
        out = {"after": after, "stream": [first.split(b":")[0].decode()] + [m.split(b":")[0].decode() for m in rest]}
    elif command == "beside-bulk":
        # N calls' connections (as the backend sees them) before a long
        # stream, the stream's once 128 KiB of it arrived, and N calls'
        # while it goes on; then the stream is cancelled.
        n = int(args[0])
        peer = channel.unary_unary("/test.Echo/Peer", identity, identity)
        before = [peer(b"", timeout=10).decode() for _ in range(n)]
        stream = channel.unary_stream("/test.Echo/Bulk", identity, identity)(b"", timeout=60)
        on = next(stream).decode()
        received = sum(len(next(stream)) for _ in range(8))
        during = [peer(b"", timeout=10).decode() for _ in range(n)]
        stream.cancel()
        out = {"before": before, "stream": on, "received": received, "during": during}
    elif command == "cancelled":
        count = channel.unary_unary("/test.Echo/Cancelled", identity, identity)
        out = {"cancelled": int(count(b"", timeout=5))}
    elif command == "set-health":
        setter = channel.unary_unary("/test.Echo/Health", identity, identity)
        setter(args[0].encode(), timeout=5)
        out = {"set": args[0]}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(*sys.argv[2:])
    else:
        client(*sys.argv[2:])
