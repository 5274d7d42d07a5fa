# syntax=docker/dockerfile:1
# Multi-stage build: a static, trimmed binary with version info, on distroless
# as non-root. Build with `make docker-build` (needs a Docker engine).
ARG GO_VERSION=1.26
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src

# Modules first, so that source changes reuse the download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

COPY cmd/ cmd/
COPY internal/ internal/

ARG VERSION=dev
ARG COMMIT=
# Set by BuildKit from --platform; plain docker build gets linux/amd64.
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH:-amd64} go build -trimpath -gcflags=all=-dwarf=false \
      -ldflags "-s -w -X github.com/endpoint-policy/endpoint-policy/internal/version.version=${VERSION} -X github.com/endpoint-policy/endpoint-policy/internal/version.commit=${COMMIT}" \
      -o /out/endpoint-policy ./cmd/endpoint-policy

# static: no libc, no shell; nonroot: uid/gid 65532, as the chart's securityContext expects.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/endpoint-policy /endpoint-policy
USER 65532:65532
ENTRYPOINT ["/endpoint-policy"]
CMD ["serve"]
