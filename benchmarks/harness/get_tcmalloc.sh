#!/usr/bin/env bash
# Print the path of gperftools' tcmalloc shared library, fetching it if needed (no root, no compiler):
#   1. a system copy found by ldconfig (e.g. after `apt-get install libtcmalloc-minimal4`);
#   2. a copy unpacked earlier under $1 (default .cache/tcmalloc);
#   3. Debian/Ubuntu: `apt-get download libtcmalloc-minimal4` + `dpkg-deb -x` into $1.
# Exits 1 with a message on stderr when none of these works (the benchmark then runs without it).
set -euo pipefail
dest="${1:-.cache/tcmalloc}"
sys_lib=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 /{print $NF; exit}')
if [ -n "${sys_lib}" ]; then echo "${sys_lib}"; exit 0; fi
found() { [ -d "${dest}" ] || return 0; find "${dest}" -name 'libtcmalloc_minimal.so.4*' -type f | sort | head -1; }
lib=$(found)
if [ -z "${lib}" ]; then
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "tcmalloc: not installed and no apt-get/dpkg-deb to fetch it" >&2; exit 1
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "${tmp}"' EXIT
  if ! (cd "${tmp}" && apt-get download libtcmalloc-minimal4 >/dev/null 2>&1); then
    echo "tcmalloc: apt-get download libtcmalloc-minimal4 failed (no Debian mirror reachable?)" >&2; exit 1
  fi
  mkdir -p "${dest}"
  dpkg-deb -x "${tmp}"/libtcmalloc-minimal4_*.deb "${dest}"
  lib=$(found)
fi
[ -n "${lib}" ] || { echo "tcmalloc: the package held no libtcmalloc_minimal.so.4" >&2; exit 1; }
echo "$(cd "$(dirname "${lib}")" && pwd)/$(basename "${lib}")"
