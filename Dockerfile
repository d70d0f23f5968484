# One image for every role of the lecture (the course also shares one
# Dockerfile). Pick the role with `command:` in the compose files:
#   docker build -t zmq-reqrep .
#   docker run --rm zmq-reqrep socket_pairs all

# --- build ---------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
# The zmq crate compiles its own copy of libzmq, in C++.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
# Small binaries: no debug info (Cargo.toml keeps some for profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols

# Dependencies first, in a layer of their own: with only Cargo.toml and
# Cargo.lock and empty sources, this layer (libzmq included, the slow part)
# is rebuilt only when the dependencies change, not when src/ does.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin \
 && echo 'fn main() {}' > src/bin/placeholder.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin placeholder \
 && rm -rf src target/release/placeholder* target/release/deps/placeholder* \
           target/release/deps/zmq_reqrep* target/release/deps/libzmq_reqrep* \
           target/release/.fingerprint/zmq-reqrep-*

COPY src ./src
ARG ROLES="reqrep_server reqrep_client broker worker broker_client socket_pairs"
RUN cargo build --release --locked $(printf -- '--bin %s ' $ROLES) \
 && mkdir /out \
 && for role in $ROLES; do cp "target/release/$role" /out/; done

# --- run -----------------------------------------------------------------
FROM debian:bookworm-slim
COPY --from=builder /out/ /usr/local/bin/
# Not root: nothing here needs it.
RUN useradd --system --no-create-home zmq
USER zmq
EXPOSE 5555 5556
CMD ["reqrep_server"]
