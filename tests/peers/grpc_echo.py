"""A real gRPC server and client (C-core, Debian's python3-grpcio) for tests/grpc.rs.

No generated code: the methods take and return raw bytes.

  grpc_echo.py serve          prints the port it listens on (127.0.0.1), serves until killed
  grpc_echo.py call ADDR      calls Say and Fail through ADDR, prints one line per call, exits 0
                              when Say echoed and Fail ended with UNAVAILABLE
"""
import sys
from concurrent import futures

import grpc

SERVICE = "echo.Echo"


def say(request, context):
    # The C-core server keeps :authority out of the metadata; its call details have it.
    details = getattr(getattr(context, "_rpc_event", None), "call_details", None)
    authority = getattr(details, "host", b"") or b""
    if isinstance(authority, str):
        authority = authority.encode()
    return b"echo:" + request + b" authority:" + authority


def fail(request, context):
    context.abort(grpc.StatusCode.UNAVAILABLE, "canary is down")


def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def call(addr):
    ok = True
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        reply = channel.unary_unary(f"/{SERVICE}/Say")(b"hello", timeout=10)
        print("Say", reply.decode(), flush=True)
        ok &= reply.startswith(b"echo:hello authority:")
        try:
            channel.unary_unary(f"/{SERVICE}/Fail")(b"x", timeout=10)
            print("Fail OK (unexpected)", flush=True)
            ok = False
        except grpc.RpcError as err:
            print("Fail", err.code().name, err.details(), flush=True)
            ok &= err.code() == grpc.StatusCode.UNAVAILABLE
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        call(sys.argv[2])
