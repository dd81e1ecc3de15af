# The lro-operator image: a static binary on an empty base, running as a non-root user.
#
# The build step is `hack/build-static`, the same script `hack/test` runs (Docker cannot run on
# the project machines, so CI builds and checks the very same binary without it): release
# profile, gnu target, glibc linked statically (`-C target-feature=+crt-static`), symbols
# stripped; the script fails unless the result is static and runs `lro-operator version`.
#
#   docker build -t lro-operator .
#   docker run --rm lro-operator version
#
# The binary resolves host names with glibc's built-in `files` and `dns` backends (/etc/hosts,
# /etc/resolv.conf, which the kubelet mounts); it needs no other file than the CA bundle below.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/cache/target \
    CARGO_TARGET_DIR=/cache/target hack/build-static --out /out/lro-operator

FROM scratch
# Trust roots for HTTPS to upstream APIs (providers may add their own CA bundle).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/lro-operator /lro-operator
# The distroless "nonroot" user; the chart sets runAsNonRoot and a read-only root filesystem.
USER 65532:65532
# /metrics, /livez, /readyz (--health-addr)
EXPOSE 8080
ENTRYPOINT ["/lro-operator"]
CMD ["run"]
