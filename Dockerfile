# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on distroless, running as non-root.
FROM golang:1.26 AS build
WORKDIR /src

# Modules first, so that source changes reuse the download layer.
COPY go.mod go.sum ./
RUN go mod download

COPY cmd/ cmd/
COPY internal/ internal/

ARG VERSION=dev
ARG COMMIT=
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
      -ldflags "-s -w -X github.com/endpoint-policy/endpoint-policy/internal/version.version=${VERSION} -X github.com/endpoint-policy/endpoint-policy/internal/version.commit=${COMMIT}" \
      -o /out/endpoint-policy ./cmd/endpoint-policy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/endpoint-policy /endpoint-policy
USER 65532:65532
ENTRYPOINT ["/endpoint-policy"]
CMD ["serve"]
