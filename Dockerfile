# syntax=docker/dockerfile:1
# Multi-stage build: a static pgrealtime binary on an empty base image,
# running as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/pgrealtime ./cmd/pgrealtime

FROM scratch
# CA certificates for sslmode=verify-full connections to Postgres.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/pgrealtime /pgrealtime
USER 65532:65532
ENV PGREALTIME_LISTEN=:8080
EXPOSE 8080
# No shell or curl in the image: the binary checks itself (GET /healthz).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["/pgrealtime", "healthcheck"]
ENTRYPOINT ["/pgrealtime"]
CMD ["serve"]
