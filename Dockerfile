# One image for every role of the lecture (the course also shares one
# Dockerfile). Pick the role with `command:` in the compose files:
#   docker build -t zmq-reqrep .
#   docker run --rm zmq-reqrep socket_pairs all
#
# The roles link Debian's libzmq (4.3.4, built with libsodium) instead of the
# zmq crate's bundled copy, so every container has CURVE (encryption):
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/keys:/keys" zmq-reqrep curve_keygen /keys/broker

# --- build ---------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
# libzmq's headers and libzmq.so for the linker (.cargo/system-libzmq.toml):
# nothing of libzmq is compiled here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libzmq3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
# Small binaries: no debug info (Cargo.toml keeps some for profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
# Both builds below read this file: link the system's libzmq, build into
# target/system-libzmq/.
ARG SYSTEM_LIBZMQ=".cargo/system-libzmq.toml"

# Dependencies first, in a layer of their own: with only Cargo.toml,
# Cargo.lock and the build configuration, and empty sources, this layer is
# rebuilt only when the dependencies change, not when src/ does.
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
RUN mkdir -p src/bin \
 && echo 'fn main() {}' > src/bin/placeholder.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --config "$SYSTEM_LIBZMQ" --bin placeholder \
 && cd target/system-libzmq/release \
 && rm -rf /build/src placeholder* deps/placeholder* deps/zmq_reqrep* \
           deps/libzmq_reqrep* .fingerprint/zmq-reqrep-*

COPY src ./src
ARG ROLES="reqrep_server reqrep_client broker worker broker_client socket_pairs curve_keygen wire"
RUN cargo build --release --locked --config "$SYSTEM_LIBZMQ" $(printf -- '--bin %s ' $ROLES) \
 && mkdir /out \
 && for role in $ROLES; do cp "target/system-libzmq/release/$role" /out/; done

# --- run -----------------------------------------------------------------
FROM debian:bookworm-slim
# The runtime library only (libzmq5 brings libsodium23): no headers, no
# compiler. apt's caches go too: the official Debian images drop them by
# themselves (/etc/apt/apt.conf.d/docker-clean), a locally made one would
# keep 78 MB of them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libzmq5 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY --from=builder /out/ /usr/local/bin/
# Not root: nothing here needs it.
RUN useradd --system --no-create-home zmq
USER zmq
EXPOSE 5555 5556
CMD ["reqrep_server"]
