"""The course's own kind of Python peers, written with plain pyzmq.

Used by tests/interop.rs as the independent other end of each Rust role.
Every peer prints one line per event, flushed, so the test can wait on it,
and lives at most LIFETIME seconds, so none can outlive a failed test.

    course_peers.py rep-server ENDPOINT           REP, binds, answers b"World"
    course_peers.py req-client ENDPOINT COUNT [HEX]
                                                  REQ, sends b"Hello" (or the
                                                  bytes HEX) COUNT times
    course_peers.py broker FRONTEND BACKEND       ROUTER/DEALER, zmq.proxy
    course_peers.py worker ENDPOINT NAME          REP, connects, answers b"World"
"""

import os
import sys
import threading

import zmq

LIFETIME = 60  # seconds
TIMEOUT_MS = 10_000


def say(*parts):
    print(*parts, flush=True)


def rep(ctx, endpoint, bind, name):
    socket = ctx.socket(zmq.REP)
    socket.linger = 0
    if bind:
        socket.bind(endpoint)
        say("listening on", socket.getsockopt_string(zmq.LAST_ENDPOINT))
    else:
        socket.connect(endpoint)
        say("connecting to", endpoint)
    while True:
        message = socket.recv()
        say(name, "received", repr(message))
        socket.send(b"World")


def req_client(ctx, endpoint, count, payload):
    socket = ctx.socket(zmq.REQ)
    socket.linger = 0
    socket.rcvtimeo = TIMEOUT_MS
    socket.connect(endpoint)
    for i in range(count):
        socket.send(payload)
        try:
            reply = socket.recv()
        except zmq.Again:
            say("no reply within", TIMEOUT_MS, "ms")
            sys.exit(1)
        say(f"#{i + 1} sent {payload!r} got {reply!r}")
    say("done")


def broker(ctx, frontend_endpoint, backend_endpoint):
    frontend = ctx.socket(zmq.ROUTER)
    backend = ctx.socket(zmq.DEALER)
    frontend.bind(frontend_endpoint)
    backend.bind(backend_endpoint)
    say(
        "broker on",
        frontend.getsockopt_string(zmq.LAST_ENDPOINT),
        backend.getsockopt_string(zmq.LAST_ENDPOINT),
    )
    zmq.proxy(frontend, backend)


def main():
    # A peer that somehow survives its test ends by itself.
    threading.Timer(LIFETIME, lambda: os._exit(3)).start()
    ctx = zmq.Context()
    role, args = sys.argv[1], sys.argv[2:]
    if role == "rep-server":
        rep(ctx, args[0], bind=True, name="server")
    elif role == "worker":
        rep(ctx, args[0], bind=False, name=args[1])
    elif role == "req-client":
        payload = bytes.fromhex(args[2]) if len(args) > 2 else b"Hello"
        req_client(ctx, args[0], int(args[1]), payload)
        os._exit(0)
    elif role == "broker":
        broker(ctx, args[0], args[1])
    else:
        sys.exit(f"unknown role {role}")


if __name__ == "__main__":
    main()
