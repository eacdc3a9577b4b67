#!/usr/bin/env bash
# The two commands of the README, with the set-up they need on a fresh machine.
#   tools/dev.sh demo   start five local redis-server masters and run examples/quickstart.rs
#   tools/dev.sh test   run the whole test suite against real masters
#   tools/dev.sh deps   only install what the demo and the tests need
set -euo pipefail
cd "$(dirname "$0")/.."

deps() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    # testcluster compiles a small C clock shim (clock-jump faults) with cc.
    command -v cc >/dev/null || missing+=(gcc)
    # loadbench draws its W7 chart with this font (its smoke test runs in `test`).
    [[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
    if ((${#missing[@]})); then
        local sudo=""
        [[ $(id -u) == 0 ]] || sudo="sudo"
        echo "installing: ${missing[*]}" >&2
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # The distribution's redis-server service is not used (tests start their own masters).
    if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
        systemctl stop redis-server || true
    fi
}

case "${1:-}" in
    deps) deps ;;
    demo) deps; cargo run --example quickstart ;;
    test)
        deps
        cargo test --workspace --features redquorum/serde --exclude redquorum-sim
        # The simulator (its differential test against a real redis-server, then about 2,000
        # seeded runs of the whole protocol), optimised: a seed costs ~5x more unoptimised.
        cargo test --release -p redquorum-sim
        # The safety suite once more on Docker containers, where an engine answers (the image
        # is built locally from the host's redis-server; nothing is pulled), this time with
        # batched rounds on (off by default; tests/support reads REDQUORUM_TEST_BATCHING).
        if docker info >/dev/null 2>&1; then
            TESTCLUSTER_BACKEND=docker REDQUORUM_TEST_BATCHING=1 \
                cargo test --test safety -- --test-threads 1
        else
            echo "docker engine not answering: safety suite ran on the process backend only" >&2
        fi
        ;;
    *) echo "usage: tools/dev.sh demo|test|deps" >&2; exit 2 ;;
esac
