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
  python3-numpy                       # independent numpy reference for the forward pass
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
