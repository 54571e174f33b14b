#!/usr/bin/env bash
# Installs every Debian package mirrorplane's build, tests and benchmarks need.
# deploy/install-deps.sh [--bench]
# Idempotent: packages already present are left alone, so a second run costs
# only the dpkg query.
set -euo pipefail

packages=(
  build-essential pkg-config meson ninja-build clang libclang-rt-14-dev clang-format
  libevent-dev libpq-dev libcurl4-openssl-dev libssl-dev libmsgpack-dev libyaml-dev
  libsqlite3-dev libcmocka-dev
  postgresql postgresql-contrib
  python3 python3-msgpack python3-yaml
  nodejs
  valgrind openssl procps curl
  libxxhash-dev nginx-light
  iproute2 nftables
  awscli
  libfuse3-dev fuse3 python3-fsspec
)
# With --bench, what the benchmarks compare against (bench/README.md).
if [ "${1:-}" = "--bench" ]; then
  packages+=(fio s3fs rclone python3-torch)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The S3-compatible test server (s3rver) comes from the npm registry; some
# nodejs builds carry npm, Debian's needs the npm package.
if ! command -v npm >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
