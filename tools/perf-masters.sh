#!/usr/bin/env bash
# Where one master's CPU goes during loadbench's W2 profile loop, per subject: samples master 0
# (a redis-server child of loadbench) with `perf record -e cpu-clock` for a few seconds in the
# middle of the loop and sorts the samples into Lua VM / redis / libc+jemalloc / kernel.
# Not part of CI. Needs `perf` (Debian: linux-perf), python3 and a release build of loadbench:
#   cargo build --release -p loadbench --features rslock
#   tools/perf-masters.sh redquorum rq-batched rq-no-fence rslock floor
# The Debian redis-server is stripped, but it exports its functions (and Lua's API); samples
# at unexported addresses inside the range of Lua's API functions are counted as Lua VM
# (lvm.c, ltable.c... are static there), the others as "redis (unresolved)".
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-target/perf-masters}
mkdir -p "$out"
server=$(command -v redis-server)
nm -D --defined-only "$server" | awk '{print $1, $3}' >"$out/syms.txt"
for subject in "$@"; do
    ./target/release/loadbench --only profile --subjects "$subject" \
        --profile-pairs "${PAIRS:-100000}" --rounds 1 >"$out/$subject.out" 2>&1 &
    bench=$!
    pid=""
    for _ in $(seq 1 100); do
        pid=$(pgrep -P "$bench" redis-server | head -1 || true)
        [[ -n $pid ]] && break
        sleep 0.2
    done
    [[ -n $pid ]] || { echo "no redis-server child of loadbench" >&2; exit 1; }
    # Past the start-up and warm-up, inside the timed loop.
    sleep "${SKIP:-2}"
    perf record -q -e cpu-clock -F 1999 -p "$pid" -o "$out/$subject.data" -- sleep "${SECS:-4}" \
        >/dev/null 2>&1
    wait "$bench"
    echo "== $subject (master 0, pid $pid)"
    perf report -i "$out/$subject.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
        python3 -c '
import bisect, re, sys
syms = sorted((int(a, 16), n) for a, n in (l.split()[:2] for l in open(sys.argv[1])))
api = [a for a, n in syms if n.startswith(("lua_", "luaL_", "luaopen_"))]
lo, hi = min(api), max(api) + 0x4000
def group(dso, sym):
    if dso.startswith("[kernel"): return "kernel (syscalls, TCP, scheduler)"
    if "jemalloc" in dso or dso.startswith("libc"): return "libc + jemalloc"
    if sym.startswith("0x"):
        return "Lua VM" if lo <= int(sym, 16) <= hi else "redis (unresolved)"
    if sym.startswith(("lua_", "luaL_", "luaopen_")): return "Lua VM"
    s = sym.lower()
    if "lua" in s or "script" in s or "eval" in s: return "redis script glue"
    return "redis commands, dict, networking"
total, samples = {}, ""
for line in sys.stdin:
    if line.startswith("# Samples"): samples = line.strip("# \n")
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(\S+)", line)
    if m:
        g = group(m.group(2), m.group(3))
        total[g] = total.get(g, 0) + float(m.group(1))
print(samples)
for g, p in sorted(total.items(), key=lambda x: -x[1]):
    print(f"{p:6.1f}%  {g}")
' "$out/syms.txt"
done
