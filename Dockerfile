# Multi-stage build: compile lazysnap, then ship it on debian-slim with fuse3.
#   docker build -t lazysnap .
#   docker run --rm --device /dev/fuse --cap-add SYS_ADMIN lazysnap --help
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY bench ./bench
RUN cargo build --release --locked --bin lazysnap

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fuse3 zstd ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/lazysnap /usr/local/bin/lazysnap
ENTRYPOINT ["/usr/local/bin/lazysnap"]
