"""pyzmq peers with credentials: the independent other end of the access
control and CURVE tests (tests/access.rs, tests/curve.rs).

Every peer prints one line per event, flushed, so the test can wait on it,
and lives at most LIFETIME seconds, so none can outlive a failed test.

    secure_peers.py req-client ENDPOINT COUNT [options]
        REQ, sends b"Hello" COUNT times; prints "#N got b'World'", then "done".
        Gives up with exit 1 after --timeout-ms without a reply.
        A monitor prints the handshake's outcome: "handshake failed: auth 400",
        "handshake failed: protocol 0x11000002", "handshake failed: no detail",
        "handshake succeeded".

    secure_peers.py knock ENDPOINT SECONDS [options]
        A new REQ socket, connected, until its handshake fails; again and
        again for SECONDS (libzmq gives up on a connection it was refused,
        so a flood of refusals takes new connections). Prints the first
        failure ("handshake failed: auth 400"), then "knocked N times".

    options:
        --plain USER PASSWORD         PLAIN credentials
        --curve SERVER_PUBLIC SECRET_KEY_FILE
                                      CURVE client: the server's public key
                                      (Z85) and our own secret key file
        --timeout-ms N                default 10000

ENDPOINT may name the source address too: tcp://127.0.0.2:0;127.0.0.1:PORT
connects from 127.0.0.2.
"""

import os
import sys
import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

LIFETIME = 60  # seconds


_SAY = threading.Lock()


def say(*parts):
    # The monitor thread prints too: one line at a time, never interleaved.
    line = " ".join(str(part) for part in parts) + "\n"
    with _SAY:
        sys.stdout.write(line)
        sys.stdout.flush()


def watch(monitor):
    """Prints the handshake events of the client socket."""
    while True:
        try:
            event = recv_monitor_message(monitor)
        except zmq.ZMQError:
            return
        kind, value = event["event"], event["value"]
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            say("handshake failed: auth", value)
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            say("handshake failed: protocol", hex(value))
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            say("handshake failed: no detail")
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            say("handshake succeeded")
        elif kind == zmq.EVENT_MONITOR_STOPPED:
            return


EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_MONITOR_STOPPED
)


def secure_socket(ctx, options):
    """A REQ socket with the credentials of the options."""
    socket = ctx.socket(zmq.REQ)
    socket.linger = 0
    socket.rcvtimeo = options["timeout_ms"]
    if options["plain"]:
        user, password = options["plain"]
        socket.plain_username = user.encode()
        socket.plain_password = password.encode()
    if options["curve"]:
        server_public, secret_file = options["curve"]
        with open(secret_file, "rb") as f:
            secret = f.read().strip()
        socket.curve_secretkey = secret
        socket.curve_publickey = zmq.curve_public(secret)
        socket.curve_serverkey = server_public.encode()
    return socket


def req_client(ctx, endpoint, count, options):
    socket = secure_socket(ctx, options)
    monitor = socket.get_monitor_socket(EVENTS)
    threading.Thread(target=watch, args=(monitor,), daemon=True).start()
    socket.connect(endpoint)
    for i in range(count):
        socket.send(b"Hello")
        try:
            reply = socket.recv()
        except zmq.Again:
            say("no reply within", options["timeout_ms"], "ms")
            os._exit(1)
        say(f"#{i + 1} got {reply!r}")
    say("done")
    os._exit(0)


def knock(ctx, endpoint, seconds, options):
    deadline = time.monotonic() + seconds
    knocks = 0
    while time.monotonic() < deadline:
        socket = secure_socket(ctx, options)
        monitor = socket.get_monitor_socket(EVENTS)
        monitor.rcvtimeo = 2000
        socket.connect(endpoint)
        try:
            while True:
                event = recv_monitor_message(monitor)
                if event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    break
                say("let in")
                os._exit(1)
        except zmq.Again:
            say("no answer to knock", knocks + 1)
            os._exit(1)
        knocks += 1
        if knocks == 1:
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                say("handshake failed: auth", value)
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                say("handshake failed: protocol", hex(value))
            else:
                say("handshake failed: no detail")
        socket.disable_monitor()
        monitor.close()
        socket.close()
        time.sleep(0.02)
    say("knocked", knocks, "times")
    os._exit(0)


def parse(args):
    options = {"plain": None, "curve": None, "timeout_ms": 10_000}
    rest = []
    while args:
        arg = args.pop(0)
        if arg == "--plain":
            options["plain"] = (args.pop(0), args.pop(0))
        elif arg == "--curve":
            options["curve"] = (args.pop(0), args.pop(0))
        elif arg == "--timeout-ms":
            options["timeout_ms"] = int(args.pop(0))
        else:
            rest.append(arg)
    return rest, options


def main():
    # A peer that somehow survives its test ends by itself.
    threading.Timer(LIFETIME, lambda: os._exit(3)).start()
    role, (args, options) = sys.argv[1], parse(sys.argv[2:])
    if role == "req-client":
        req_client(zmq.Context(), args[0], int(args[1]), options)
    elif role == "knock":
        knock(zmq.Context(), args[0], float(args[1]), options)
    else:
        sys.exit(f"unknown role {role}")


if __name__ == "__main__":
    main()
