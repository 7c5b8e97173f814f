#!/usr/bin/env bash
# Checks for what building Hotlake needs beyond Rust, installs it when it can (root with
# apt-get), and otherwise says exactly what is missing. Sourced by scripts/run and scripts/test.
set -euo pipefail

hotlake_ensure_deps() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found. Install Rust from https://rustup.rs and run this again." >&2
        exit 1
    fi
    local missing=()
    command -v clang >/dev/null 2>&1 || missing+=(clang)
    # RocksDB's bindings are generated with libclang at build time.
    # libclang itself (libclang.so or libclang-14.so...), not libclang-cpp, which bindgen cannot use.
    # (`ls` fails when any one pattern matches nothing, so ask whether it listed anything.)
    if ! { ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
        /usr/lib/*-linux-gnu/libclang.so* /usr/lib/*-linux-gnu/libclang-[0-9]*.so* 2>/dev/null || true; } | grep -q .; then
        missing+=(libclang-dev)
    fi
    command -v c++ >/dev/null 2>&1 || missing+=(g++)
    # The partition test puts nodes in network namespaces (`ip netns`).
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    # The systemd unit in deploy/ is checked with systemd-analyze.
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    hotlake_install_packages "needed to build RocksDB and to run the tests" "${missing[@]}"
}

# Installs Debian packages: as root with apt-get, else with sudo, else says what to install.
#   hotlake_install_packages WHY PACKAGE...
hotlake_install_packages() {
    local why=$1; shift
    if [ $# -eq 0 ]; then
        return 0
    fi
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "installing $* ($why)..." >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
        echo "installing $* with sudo ($why)..." >&2
        sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        echo "error: missing $*; install them (Debian: apt-get install $*) and run this again." >&2
        exit 1
    fi
}

# The systems `hotlake-bench compare` measures Hotlake against, from Debian's packages:
# InfluxDB 1.6 (`influxd`) and VictoriaMetrics 1.79 (`victoria-metrics`). The packages' own
# services are not used; the harness starts its own processes on loopback.
hotlake_ensure_bench_peers() {
    local missing=()
    command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
    command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
    hotlake_install_packages "the systems the benchmark compares with" "${missing[@]}"
}

# Build caches live outside the clone so repeated runs (and CI on the same machine) reuse them.
# Simulation builds (--cfg madsim) need a target directory of their own.
export HOTLAKE_TARGET_BASE="${HOTLAKE_TARGET_BASE:-$HOME/.cache/hotlake-target}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOTLAKE_TARGET_BASE/main}"
export HOTLAKE_SIM_TARGET_DIR="${HOTLAKE_SIM_TARGET_DIR:-$HOTLAKE_TARGET_BASE/sim}"
