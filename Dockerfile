# Build: docker build -t berry .
# Run:   docker run --rm -p 3000:3000 -v $PWD/config.toml:/etc/berry/config.toml berry
#
# Docker's default seccomp profile blocks io_uring; Berry then falls back to epoll by itself
# and logs "I/O driver: epoll". To run on io_uring, start the container with a seccomp profile
# that allows io_uring_setup/io_uring_enter/io_uring_register.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin berry

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 berry
COPY --from=build /src/target/release/berry /usr/local/bin/berry
COPY config /etc/berry/examples
USER berry
# BIND_ADDRESS only applies when the config has no `[server] bind_address` (the file wins),
# so a config that sets 127.0.0.1 cannot be reached through -p. No RUST_LOG: it would
# override the config's `[observability] log_level` (info when unset).
ENV CONFIG_PATH=/etc/berry/config.toml \
    BIND_ADDRESS=0.0.0.0:3000
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/berry"]
CMD ["serve"]
