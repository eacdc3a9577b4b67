#!/bin/sh
# Regenerate tests/data/ketama/*.tsv from the system libmemcached.
# Needs Debian's libmemcached-dev (headers + libmemcached.so, libhashkit).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/tests/data/ketama"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cc -std=c11 -O2 -Wall -Wextra -Werror -o "$build/ketama_vectors" \
  "$here/ketama_vectors.c" -lmemcached -lhashkit -lm
mkdir -p "$out"
rm -f "$out"/*.tsv
"$build/ketama_vectors" "$out"
ls -l "$out"
