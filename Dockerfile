# geoproxy container image: a static binary on a distroless base, run as a
# non-root user.
#
#   docker build -t geoproxy .
#   docker run --rm --stop-timeout 30 -p 8080:8080 -p 127.0.0.1:9090:9090 \
#     -v "$PWD/geoproxy-config:/etc/geoproxy:ro" geoproxy
#
# The config is read from /etc/geoproxy/geoproxy.yaml (mount the directory
# holding yours there, so that edits are seen and reloaded; or pass -config).
# In a container, listen on all interfaces:
#   listen: :8080          # proxy
#   admin: {listen: :9090} # /metrics, /healthz, /readyz, dashboard
# The embedded geo database is inside the binary; to use another .mmdb, mount
# it and set geoip.database to its path.
# TLS: listen on 8443 (tls.listen: :8443; publish it with -p 443:8443); ACME
# keeps its certificates in /var/lib/geoproxy/acme, which belongs to the
# non-root user: mount a volume there (-v geoproxy-acme:/var/lib/geoproxy/acme)
# so that a restart does not ask the CA again.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/geoproxy ./cmd/geoproxy && mkdir -p /out/acme

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/geoproxy /usr/local/bin/geoproxy
COPY --from=build --chown=65532:65532 /out/acme /var/lib/geoproxy/acme
USER nonroot:nonroot
EXPOSE 8080 8443 9090
# Healthy while /readyz on the admin listener answers 2xx: serving, with a
# region that can take traffic. The image has no shell and no curl, so the
# binary checks itself. With another admin port, override the test in exec
# form (there is no shell for the string form), e.g. in compose:
#   healthcheck: {test: ["CMD", "/usr/local/bin/geoproxy", "healthcheck", "-url", "http://127.0.0.1:PORT/readyz"]}
# Kubernetes ignores HEALTHCHECK: it uses the pod's probes (deploy/k8s).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/geoproxy", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/geoproxy"]
CMD ["serve", "-config", "/etc/geoproxy/geoproxy.yaml"]
