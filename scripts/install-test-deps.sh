#!/usr/bin/env bash
# Installs the system packages the tests need on Debian 12 (as root, or with sudo), then
# checks kubectl. Idempotent: packages already installed are skipped, so a machine that has
# them all needs no network and no root. `npm run test:all` runs it before `npm test`;
# .ci/run calls it too.
set -euo pipefail

# What each is for: real Python gRPC clients (python3-grpcio, python3-protobuf, protoc +
# grpc_python_plugin to generate stubs), curl, and a real Prometheus server that scrapes
# /metrics in test/prometheus.test.ts; openssl makes the TLS test's certificate; iproute2's
# `ip` makes the chaos test's network namespaces (test/chaos.test.ts, run as root); Go with
# Debian's grpc-go and the Go protoc plugins build the Go interop client
# (test/interop-go.test.ts, offline, GOPATH mode); etcd is the coordinator the failover tests
# elect through; chromium runs the browser test (CORS, connect-web); python3-h2 builds raw
# HTTP/2 frames for the engine's tests; redis-server and redis-sentinel are the bench's anchors.
APT_PACKAGES=(curl openssl iproute2 python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc prometheus
  golang-go golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc
  etcd-server etcd-client chromium python3-h2 nghttp2-client redis-server redis-sentinel)

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-test-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# kubectl renders the Kubernetes manifests for test/k8s.test.ts (kustomize is built in).
# Debian's own kubernetes-client (v1.20) is too old for our kustomization; install kubectl
# from the Kubernetes apt repository (https://pkgs.k8s.io) when apt cannot find it.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "install-test-deps: kubectl is missing; trying apt-get install kubectl"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kubectl || {
    echo "install-test-deps: kubectl is required (v1.27 or newer): install it from https://pkgs.k8s.io" >&2
    exit 1
  }
fi
kubectl version --client >/dev/null
echo "install-test-deps: every package the tests need is installed"
