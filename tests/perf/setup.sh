#!/usr/bin/env bash
# What the benchmarks need beyond the test suite (not part of .ci/run: benchmarks are not CI):
# nginx (the direct backend and the reverse proxy compared with), haproxy (a peer on the rate-limited
# route, tests/perf/bench_peers.py), wrk (the load) and valgrind (tests/perf/instructions.py) from Debian,
# py-spy (profiles of the gateway under load) from PyPI into the project's venv.
set -euo pipefail
cd "$(dirname "$0")/../.."

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}"
    # Debian's packages may start their own nginx (port 80) and haproxy services; the benchmarks
    # never use them, and leave them as the packages set them up.
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test,perf]'
echo "ready: .venv/bin/python -m tests.perf.run"
