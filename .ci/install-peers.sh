#!/usr/bin/env bash
# Installs the real third-party peers the interop tests and benchmarks run against.
# Go tools go into .peers/bin (gitignored) at pinned versions; Debian packages via apt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath
export GOBIN="$root/.peers/bin"
mkdir -p "$GOBIN"

go_tool() { # name module@version
  local name=$1 mod=$2 stamp="$GOBIN/.$1.version"
  if [ -x "$GOBIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then return 0; fi
  echo "install-peers: go install $mod"
  go install "${@:3}" "$mod"
  echo "$mod" > "$stamp"
}

# For modules whose version list the proxy refuses (go install then fails while loading
# deprecation notices): build inside a throw-away module that requires the pinned version.
go_module_tool() { # name module version package
  local name=$1 mod=$2 ver=$3 pkg=$4 stamp="$GOBIN/.$1.version" tmp
  if [ -x "$GOBIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod@$ver" ]; then return 0; fi
  echo "install-peers: go build $mod@$ver"
  tmp=$(mktemp -d)
  (cd "$tmp" && go mod init peerbuild >/dev/null 2>&1 && go get "$mod/${pkg#./}@$ver" >/dev/null && go build -o "$GOBIN/$name" "$mod/${pkg#./}")
  rm -rf "$tmp"
  echo "$mod@$ver" > "$stamp"
}

if command -v go >/dev/null 2>&1; then
  go_tool conformance github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111 -ldflags "-X main.Version=97274622c111" &
  go_tool oras oras.land/oras/cmd/oras@v1.3.3 &
  go_tool regctl github.com/regclient/regclient/cmd/regctl@v0.11.5 &
  wait
  go_tool crane github.com/google/go-containerregistry/cmd/crane@v0.21.9 &
  go_module_tool olareg github.com/olareg/olareg v0.2.2 ./cmd/olareg &
  wait
  # The S3-compatible server the S3 storage driver is tested against (Apache-2.0, posix-backed;
  # docs/testing.md says why this one).
  go_tool versitygw github.com/versity/versitygw/cmd/versitygw@v1.8.0
else
  echo "install-peers: go not found; Go-built peers not installed" >&2
  [ "${CI:-}" = "true" ] && exit 1
fi

# Debian packages: skopeo, umoci and distribution 2.8 (binary extracted, no service started).
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  need=()
  command -v skopeo >/dev/null || need+=(skopeo)
  command -v umoci >/dev/null || need+=(umoci)
  command -v openssl >/dev/null || need+=(openssl)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  if [ ! -x "$root/.peers/docker-registry/usr/bin/docker-registry" ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download docker-registry >/dev/null 2>&1 || { apt-get update -qq && apt-get download docker-registry; })
    dpkg-deb -x "$tmp"/docker-registry_*.deb "$root/.peers/docker-registry"
    rm -rf "$tmp"
  fi
fi
echo "install-peers: done"
