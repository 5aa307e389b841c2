# keypool's container image: docker build -t keypool . && docker run -p 8080:8080 keypool
#
# A static binary (no cgo) on distroless's static image: no shell, no package manager,
# a non-root user (nonroot, 65532), and the CA certificates that -store rediss://… needs
# to verify Redis's certificate. Flags go after the image name, or as KEYPOOL_*
# variables (docker run -e KEYPOOL_STORE=rediss://…).
#
# Health: the image has no shell and no curl, so it has no HEALTHCHECK. Let the
# orchestrator probe over HTTP: GET /healthz for liveness and GET /readyz for readiness,
# on port 8080 (Kubernetes: httpGet probes). Both answer 200 when all is well.
#
# The builder's name is written out in full (docker.io/library/golang) so that podman,
# which resolves no short names by default, builds it as docker does.
#
# Machines that cannot pull these base images build Dockerfile.local from a binary built
# on the host instead; scripts/image-check.sh does, and checks the result.

FROM docker.io/library/golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The generated code and the playground's assets are committed: nothing to generate.
RUN CGO_ENABLED=0 go build -trimpath -ldflags=-s -o /keypool .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /keypool /keypool
EXPOSE 8080
USER nonroot:nonroot
ENTRYPOINT ["/keypool"]
