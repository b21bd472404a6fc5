# syntax=docker/dockerfile:1
# Build:  docker build -t ghcr.io/smtp-relay-operator/smtp-relay-operator:0.1.0 .

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin smtp-relay-operator \
    && install -D -m 0755 target/release/smtp-relay-operator /out/smtp-relay-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="smtp-relay-operator" \
      org.opencontainers.image.description="Kubernetes operator that verifies SMTP relays" \
      org.opencontainers.image.source="https://github.com/smtp-relay-operator/smtp-relay-operator"
COPY --from=builder /out/smtp-relay-operator /smtp-relay-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/smtp-relay-operator"]
CMD ["run"]
