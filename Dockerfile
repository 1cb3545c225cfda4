# authbl-milter in a container: a static binary on a distroless base, run
# as a non-root user. Mount the config at /etc/authbl-milter/config.toml;
# the account store lives in the volume /var/lib/authbl-milter.
#
#   docker build -t authbl-milter .
#   docker run -v ./config.toml:/etc/authbl-milter/config.toml:ro \
#     -v authbl-state:/var/lib/authbl-milter -p 127.0.0.1:8899:8899 authbl-milter
#
# In a container, listen on all interfaces of its network namespace, e.g.
# [milter] listen = "inet:0.0.0.0:8899", or on a unix socket in a volume
# shared with the MTA's container, e.g. "unix:/run/authbl-milter/milter.sock".

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=container
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/authbl-milter ./cmd/authbl-milter \
    && mkdir -p /out/state /out/run

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/authbl-milter /usr/local/bin/authbl-milter
COPY --from=build --chown=nonroot:nonroot /out/state /var/lib/authbl-milter
COPY --from=build --chown=nonroot:nonroot /out/run /run/authbl-milter
USER nonroot:nonroot
VOLUME ["/var/lib/authbl-milter"]
EXPOSE 8899
ENTRYPOINT ["/usr/local/bin/authbl-milter"]
CMD ["serve", "-config", "/etc/authbl-milter/config.toml"]
