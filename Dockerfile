# Multi-stage: build a static binary against musl, ship it alone.
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/tsecho

FROM scratch
COPY --from=build /src/target/release/tsecho /tsecho
# Unprivileged: no root inside the container.
USER 65534:65534
EXPOSE 21567/tcp 21567/udp 9121/tcp
ENTRYPOINT ["/tsecho"]
CMD ["serve", "--metrics", "tcp://0.0.0.0:9121", "--utc"]
