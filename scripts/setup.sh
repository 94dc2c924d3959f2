#!/usr/bin/env bash
# Installs the Debian 12 packages kvrag needs to build and test. Idempotent; run as root
# (or with sudo available). Nothing else is downloaded at build or run time.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  clang libclang-rt-14-dev            # libFuzzer + sanitizer runtimes for the fuzz/ASan step
  libgtest-dev libgmock-dev           # unit tests
  libpcre2-dev libutf8proc-dev        # tokenizer: Unicode-aware pre-tokenizer regexes, normalisation
  nlohmann-json3-dev libcli11-dev     # JSON, command-line parsing
  libsqlite3-dev libcmark-dev libgumbo-dev libpoppler-cpp-dev  # memory: store (FTS5), Markdown, HTML, PDF
  zlib1g-dev                          # memory: .gz text (pkg-config zlib)
  python3-numpy                       # independent numpy reference for the forward pass
  libcpp-httplib-dev                  # server: HTTP (header + shared library, pkg-config cpp-httplib)
  libssl-dev                          # memory: SHA-256 via OpenSSL's EVP (pkg-config openssl)
  chromium                            # web page tests: headless browser driven by playwright-core (tests/web)
  haproxy curl                        # scale-out: HAProxy 2.6 in front of replicas (deploy/, scripts/cluster-up, tests/scale)
  libpq-dev postgresql-15             # scale-out: the shared PostgreSQL memory store (libpq; the server for cluster-up and tests)
)
# Server client tests use the official openai npm package: Debian's nodejs/npm only when no
# node/npm is on the PATH (one installed another way is left alone).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then PACKAGES+=(nodejs npm); fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
else

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The server tests' node dependencies, exactly as locked (tests/server/package-lock.json).
(cd "$(dirname "$0")/../tests/server" && npm ci --no-audit --no-fund --loglevel=error)
# The web page tests' playwright-core (tests/web/package-lock.json); it drives Debian's
# /usr/bin/chromium and downloads no browser of its own.
(cd "$(dirname "$0")/../tests/web" && npm ci --no-audit --no-fund --loglevel=error)
