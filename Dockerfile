# syntax=docker/dockerfile:1
# Valet's container image: a static (musl) binary on distroless, running as uid 65532.
#   docker build -t valet:0.1.0 .
# The deploy/kubernetes manifests expect this image (set its name in base/kustomization.yaml).
# Crypto is ring + rustls (no OpenSSL), so the binary links nothing at run time; provider TLS
# trusts the Mozilla roots built into it (webpki-roots), and a private Vault CA is configured
# with vault.ca_cert_file.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# musl-gcc compiles ring's C and assembly for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# Built natively for the image's platform (under emulation for another one with buildx).
RUN case "$(uname -m)" in \
      x86_64) echo x86_64-unknown-linux-musl ;; \
      aarch64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
# .dockerignore admits only what the build needs (manifest, lockfile, build script, sources,
# protos, built-in profiles, the bench target the manifest names).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(cat /rust-target)" \
 && export "CC_$(echo "$target" | tr - _)=musl-gcc" \
 && cargo build --release --locked --bin valet --target "$target" \
 && install -D -m 0755 "target/$target/release/valet" /out/valet

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/valet /usr/local/bin/valet
# distroless "nonroot": uid/gid 65532, matching the Kubernetes securityContext.
USER 65532:65532
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/valet"]
CMD ["serve", "--config", "/etc/valet/valet.toml"]
