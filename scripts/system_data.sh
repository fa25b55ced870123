#!/usr/bin/env bash
# Best effort, never fails: Debian's real Fashion-MNIST for the semi-weak tests (they skip without it).
# Installs only as root with apt-get; NO_SYSTEM_DATA=1 skips.
set -u
dir=/usr/share/datasets/fashion-mnist
[ -d "$dir" ] && exit 0
[ "${NO_SYSTEM_DATA:-0}" = 1 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's dataset-fashion-mnist (30 MB, real Fashion-MNIST for the tests; NO_SYSTEM_DATA=1 skips)"
  install() { timeout 300 apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null 2>&1; }
  install || { timeout 300 apt-get update -qq >/dev/null 2>&1 && install; } \
    || echo "could not install dataset-fashion-mnist; the Fashion-MNIST tests will skip"
else
  echo "no $dir (as root: apt-get install dataset-fashion-mnist); the Fashion-MNIST tests will skip"
fi
exit 0
