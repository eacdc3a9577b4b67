#!/usr/bin/env bash
# Proof by re-introduction: applies each bug patch of this directory (or those named, e.g.
# `sim/reintroduce/run.sh a-validity-from-quorum`) to a scratch worktree of HEAD, runs the
# simulator's CI seeds on it, and prints the first failing seed (or that none failed).
#
#   SIM_SEEDS=2000 sim/reintroduce/run.sh            # every patch, the CI budget (default)
#   sim/reintroduce/run.sh c-no-recheck-after-fence  # one patch
#   sim/reintroduce/run.sh sharded-                  # the sharded bugs (`--test sharded`,
#                                                    # SIM_SHARDED_SEEDS, default 1000)
#
# The patches are never committed as code; each applies to a clean checkout of HEAD. The
# scratch worktrees share one target directory of their own, target/reintroduce (seeded from
# target/release on first use, so only the workspace's own crates are rebuilt per patch); not
# this checkout's: cargo would take a scratch build for this checkout's, same crates, same
# hashes. Replay a reported seed inside the scratch tree, which is kept when KEEP=1:
# SIM_SEED=n cargo test --release -p redquorum-sim --test sim -- --nocapture
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/reintroduce}"
if [ ! -d "$CARGO_TARGET_DIR/release" ] && [ -d "$repo/target/release" ]; then
    mkdir -p "$CARGO_TARGET_DIR" && cp -a "$repo/target/release" "$CARGO_TARGET_DIR/"
fi
export SIM_SEEDS="${SIM_SEEDS:-2000}"
if [ "$#" -gt 0 ]; then
    # Each argument names a patch or the start of names (`sharded-`: every sharded bug).
    patches=()
    for arg in "$@"; do
        for p in "$here/$(basename "${arg%.patch}")"*.patch; do patches+=("$(basename "$p" .patch)"); done
    done
else
    patches=()
    for p in "$here"/*.patch; do patches+=("$(basename "$p" .patch)"); done
fi
for name in "${patches[@]}"; do
    name="$(basename "${name%.patch}")"
    patch="$here/$name.patch"
    scratch="$(mktemp -d "${TMPDIR:-/tmp}/reintroduce-${name%.patch}.XXXX")"
    git -C "$repo" worktree add --quiet --detach "$scratch" HEAD
    git -C "$scratch" apply "$patch"
    log="$scratch.log"
    started=$(date +%s)
    # A sharded bug runs the sharded simulator as CI does (its timing faults off unless
    # SHARDED_TIMING=1), the others the main one.
    case "$name" in
        sharded-*) test=sharded seeds="SIM_SHARDED_SEEDS=${SIM_SHARDED_SEEDS:-1000}" \
            replay=SIM_SHARDED_SEED timing="${SHARDED_TIMING:-0}" ;;
        *) test=sim seeds="SIM_SEEDS=$SIM_SEEDS" replay=SIM_SEED timing=1 ;;
    esac
    if (cd "$scratch" && env "$seeds" SIM_TIMING="$timing" \
        cargo test --release -p redquorum-sim --test "$test" >"$log" 2>&1); then
        result="NOT CAUGHT in ${seeds#*=} seeds"
    else
        seed="$(grep -o 'seed [0-9]* failed' "$log" | head -1 | grep -o '[0-9]*' || true)"
        if [ -n "$seed" ]; then
            result="first failing seed $seed (replay: $replay=$seed SIM_TIMING=$timing cargo test --release -p redquorum-sim --test $test -- --nocapture)"
        else
            result="build or test error, see $log"
        fi
    fi
    echo "${name%.patch}: $result [$(( $(date +%s) - started )) s]"
    grep -A3 '^violations' "$log" | sed -n 2,3p | sed 's/^/    /' || true
    if [ "${KEEP:-0}" != 1 ]; then
        git -C "$repo" worktree remove --force "$scratch"
    fi
done
