"""pyzmq peers for the wire relay's tests (tests/wire.rs): two sockets of
the course's own library, talking through `wire`, each saying exactly
which frames it sent and received, so that the test can hold them against
what the relay reports.

Every peer prints one line per event, flushed, so the test can wait on it,
and lives at most LIFETIME seconds, so none can outlive a failed test.
Frames are printed in hex, separated by commas (an empty frame is empty):
"send ,48656c6c6f" is [b"", b"Hello"].

    wire_peers.py server KIND ENDPOINT [options]
        KIND rep or router; binds ENDPOINT and prints "listening on ...".
        For each message: "recv FRAMES", then its reply, "send FRAMES":
        b"World" (a router puts the sender's identity first).

    wire_peers.py client KIND ENDPOINT COUNT [options]
        KIND req or dealer; connects to ENDPOINT, sends COUNT requests, each
        waiting for its reply; prints "send FRAMES" and "recv FRAMES", then
        "done". A req sends [b"Hello"], a dealer [b"Hello", b"again"].

    options:
        --identity NAME        the socket's routing id (ZMQ_ROUTING_ID)
        --plain USER PASSWORD  (client) PLAIN credentials
        --plain-server USER PASSWORD
                               (server) a PLAIN server admitting that user
                               (libzmq's PLAIN server needs a ZAP handler:
                               pyzmq's ThreadAuthenticator)
        --curve-server         (server) a CURVE server with a new key pair;
                               prints "server key PUBLIC" before listening
        --curve SERVER_PUBLIC  (client) CURVE, with a new key pair of its own
"""

import os
import sys
import threading

import zmq

LIFETIME = 60  # seconds
TIMEOUT_MS = 10_000


def say(*parts):
    print(*parts, flush=True)


def frames(message):
    return ",".join(frame.hex() for frame in message)


def parse(args):
    options = {"identity": None, "plain": None, "plain_server": False,
               "curve_server": False, "curve": None}
    rest = []
    while args:
        arg = args.pop(0)
        if arg == "--identity":
            options["identity"] = args.pop(0).encode()
        elif arg == "--plain":
            options["plain"] = (args.pop(0).encode(), args.pop(0).encode())
        elif arg == "--plain-server":
            options["plain_server"] = (args.pop(0), args.pop(0))
        elif arg == "--curve-server":
            options["curve_server"] = True
        elif arg == "--curve":
            options["curve"] = args.pop(0).encode()
        else:
            rest.append(arg)
    return rest, options


def socket_of(ctx, kind, options):
    socket = ctx.socket(kind)
    socket.linger = 0
    socket.rcvtimeo = TIMEOUT_MS
    if options["identity"] is not None:
        socket.routing_id = options["identity"]
    if options["plain"]:
        socket.plain_username, socket.plain_password = options["plain"]
    if options["plain_server"]:
        from zmq.auth.thread import ThreadAuthenticator

        user, password = options["plain_server"]
        authenticator = ThreadAuthenticator(ctx)
        authenticator.start()
        authenticator.configure_plain(domain="*", passwords={user: password})
        socket.plain_server = True
    if options["curve_server"]:
        public, secret = zmq.curve_keypair()
        socket.curve_server = True
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        say("server key", public.decode())
    if options["curve"]:
        public, secret = zmq.curve_keypair()
        socket.curve_serverkey = options["curve"]
        socket.curve_publickey = public
        socket.curve_secretkey = secret
    return socket


def server(ctx, kind, endpoint, options):
    socket = socket_of(ctx, {"rep": zmq.REP, "router": zmq.ROUTER}[kind], options)
    socket.rcvtimeo = -1
    socket.bind(endpoint)
    say("listening on", socket.getsockopt_string(zmq.LAST_ENDPOINT))
    while True:
        message = socket.recv_multipart()
        say("recv", frames(message))
        reply = [b"World"] if kind == "rep" else [message[0], b"World"]
        socket.send_multipart(reply)
        say("send", frames(reply))


def client(ctx, kind, endpoint, count, options):
    socket = socket_of(ctx, {"req": zmq.REQ, "dealer": zmq.DEALER}[kind], options)
    socket.connect(endpoint)
    request = [b"Hello"] if kind == "req" else [b"Hello", b"again"]
    for _ in range(count):
        socket.send_multipart(request)
        say("send", frames(request))
        try:
            reply = socket.recv_multipart()
        except zmq.Again:
            say("no reply within", TIMEOUT_MS, "ms")
            os._exit(1)
        say("recv", frames(reply))
    say("done")
    os._exit(0)


def main():
    # A peer that somehow survives its test ends by itself.
    threading.Timer(LIFETIME, lambda: os._exit(3)).start()
    role, (args, options) = sys.argv[1], parse(sys.argv[2:])
    ctx = zmq.Context()
    if role == "server":
        server(ctx, args[0], args[1], options)
    elif role == "client":
        client(ctx, args[0], args[1], int(args[2]), options)
    else:
        sys.exit(f"unknown role {role}")


if __name__ == "__main__":
    main()
