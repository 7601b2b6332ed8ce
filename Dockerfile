# The control plane image: the `sluice` binary and the filter module it serves to Envoys.
# docker build -t sluice .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN rustup target add wasm32-wasip1 \
 && cargo build --release --target wasm32-wasip1 -p sluice-filter \
 && cargo build --release -p sluice

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY --from=build /src/target/wasm32-wasip1/release/sluice_filter.wasm /usr/share/sluice/sluice_filter.wasm
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve", "--kubernetes", "--wasm", "/usr/share/sluice/sluice_filter.wasm"]
