# Alert Relay local mode in a container: `docker build -t alert-relay .` then
#   docker run -p 8080:8080 -v relay-data:/var/lib/relay alert-relay
# (docs/local-mode.md, "Container"). The build step is the README's install command.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --profile local -p relay

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/relay --shell /usr/sbin/nologin relay \
    && install -d -m 0700 -o relay -g relay /var/lib/relay
COPY --from=build /src/target/local/relay /usr/local/bin/relay
USER relay
ENV RELAY_DB=/var/lib/relay/relay.db \
    RELAY_LOG_FORMAT=json
VOLUME ["/var/lib/relay"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["relay", "health", "--url", "http://127.0.0.1:8080"]
ENTRYPOINT ["relay"]
# --public: reachable through the published port; terminate TLS in front, or mount a certificate and add
# --tls-cert/--tls-key (RELAY_TLS_CERT/RELAY_TLS_KEY)
CMD ["serve", "--public"]
