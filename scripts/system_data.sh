#!/usr/bin/env bash
# Best effort, never fails: Debian's real data for the tests that use it (they skip, saying why, without it):
# - dataset-fashion-mnist: real Fashion-MNIST for the semi-weak tests;
# - TTS voices, sox, espeak-ng and the scratch / sonic-pi sound files for scripts/speaker_voices.py (real recorded
#   voices for the speaker augmentation measurement) and its test.
# Installs only as root with apt-get; NO_SYSTEM_DATA=1 skips.
set -u
[ "${NO_SYSTEM_DATA:-0}" = 1 ] && exit 0
packages=()
[ -d /usr/share/datasets/fashion-mnist ] || packages+=(dataset-fashion-mnist)
for tool in flite festival sox espeak-ng; do command -v "$tool" >/dev/null || { packages+=(
  flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox espeak-ng); break; }; done
sounds="$HOME/.cache/openset_ray/debian-sounds"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if [ ${#packages[@]} -gt 0 ]; then
    echo "installing Debian's ${packages[*]} (real data for the tests; NO_SYSTEM_DATA=1 skips)"
    install() { timeout 600 apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1; }
    install || { timeout 300 apt-get update -qq >/dev/null 2>&1 && install; } \
      || echo "could not install ${packages[*]}; the tests that need them will skip"
  fi
  if [ ! -d "$sounds/usr/share/scratch" ]; then   # what `scripts/speaker_voices.py --fetch-sounds` does
    tmp=$(mktemp -d)
    fetch() { (cd "$tmp" && timeout 600 apt-get download -qq scratch sonic-pi-samples >/dev/null 2>&1); }
    { fetch || { timeout 300 apt-get update -qq >/dev/null 2>&1 && fetch; }; } && mkdir -p "$sounds" \
      && (for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$sounds" || exit 1; done) \
      || echo "could not fetch the scratch / sonic-pi sounds; tests/test_speaker_voices.py will skip"
    rm -rf "$tmp"
  fi
elif [ ${#packages[@]} -gt 0 ]; then
  echo "missing Debian packages (as root: apt-get install ${packages[*]}); the tests that need them will skip"
fi
exit 0
