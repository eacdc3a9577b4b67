#!/usr/bin/env bash
# The two commands of the README, with the set-up they need on a fresh machine.
#   tools/dev.sh demo   start five local redis-server masters and run examples/quickstart.rs
#   tools/dev.sh test   run the whole test suite against real masters
#   tools/dev.sh deps   only install what the demo and the tests need
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

deps() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    # libfaketime: clock-jump faults in testcluster.
    need_pkg libfaketime || missing+=(libfaketime)
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
    test) deps; cargo test --workspace --all-features ;;
    *) echo "usage: tools/dev.sh demo|test|deps" >&2; exit 2 ;;
esac
