#!/usr/bin/env bash
# The offline profile's images: Debian's dataset-fashion-mnist (the original IDX files).
# Where apt-get cannot be used, the kit loads the same data from the Hugging Face hub instead.
set -uo pipefail
pkg=dataset-fashion-mnist
if dpkg -s "$pkg" >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
  if [ "$sudo" != none ]; then
    echo "data: installing $pkg with apt-get"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "$pkg" && exit 0
    echo "data: apt-get failed" >&2
  fi
fi
echo "data: $pkg not installed; fashion_mnist will be loaded from the Hugging Face hub (zalando-datasets/fashion_mnist)" >&2
exit 0
