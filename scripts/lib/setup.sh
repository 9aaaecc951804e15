# Shared set-up for scripts/test, scripts/demo and scripts/install: apt packages, venvs, pip.
# Idempotent and quiet when everything is already there. Every pip install goes through
# constraints.txt, so what a device or a test run gets is pinned.

# Debian 13 (trixie) renamed libraries in the 64-bit time_t transition: libmpg123-0 → libmpg123-0t64.
debian_major() { (. "${OS_RELEASE:-/etc/os-release}" 2>/dev/null && echo "${VERSION_ID%%.*}") || echo 0; }
if [ "$(debian_major)" -ge 13 ] 2>/dev/null; then MPG123_PKG=libmpg123-0t64; else MPG123_PKG=libmpg123-0; fi

# What a device needs: Python with venv, and what builds pyalsaaudio (no wheels on PyPI) and,
# on Python 3.13, lgpio (gcc, the Python headers; SWIG comes pinned from PyPI).
DEVICE_APT_PACKAGES=(
  python3 python3-venv python3-dev gcc pkg-config libasound2-dev
  # aplay/arecord/alsamixer: what a Pi owner tries first when the sound is wrong
  alsa-utils
  # audio.wire codecs (loaded with ctypes): Opus (opuslib-next) and MP3 decoding (libmpg123)
  libopus0 "$MPG123_PKG"
)
# Development, tests and the demo, on top of the device's packages (never installed on a device).
APT_PACKAGES=(
  "${DEVICE_APT_PACKAGES[@]}"
  # speech for tests and the demo, resampling/mixing for the rigs
  espeak-ng sox
  # real-time audio rig: PulseAudio null sink reached through the ALSA pulse plugin
  pulseaudio pulseaudio-utils libasound2-plugins
  # systemd-analyze for the unit tests
  systemd
  # the unit's sandbox emulated for tests/test_shipped.py (bubblewrap + setpriv)
  bubblewrap
  # wake word: the corpus's other voices (bench/wake_corpus.py), the syscall check (strace)
  flite festival festvox-kallpc16k festvox-kdlpc16k strace
  # the simulator's MP3 answers (xStar MonoMp3) are encoded with LAME
  libmp3lame0
)

CONSTRAINTS="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/constraints.txt"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_apt_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing apt packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

pick_python() {
  local py
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 &&
      "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"
      return 0
    fi
  done
  echo "setup: Python >= 3.11 with venv is required" >&2
  return 1
}

# pin_of NAME: the version constraints.txt pins NAME to.
pin_of() {
  local v
  v="$(sed -n "s/^$1==\([^ ]*\).*/\1/p" "$CONSTRAINTS")"
  if [ -z "$v" ]; then
    echo "setup: $1 has no pin in $CONSTRAINTS" >&2
    return 1
  fi
  echo "$v"
}

# ensure_lgpio_wheel PYTHON WHEELHOUSE: make sure pip finds lgpio for PYTHON, by building its sdist
# into WHEELHOUSE when PyPI has no wheel for it (Python 3.13). PYPI=1 makes lgpio's setup.py
# compile the lg C sources it bundles (no liblgpio-dev); SWIG is the pinned one from PyPI.
ensure_lgpio_wheel() {
  local py="$1" wheels="$2" version tag build
  version="$(pin_of lgpio)"
  tag="$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  if compgen -G "$wheels/lgpio-$version-$tag-*.whl" >/dev/null ||
    [ "$("$py" -c 'import importlib.metadata as m; print(m.version("lgpio"))' 2>/dev/null)" \
      = "$version" ]; then
    return 0
  fi
  mkdir -p "$wheels"
  build="$(mktemp -d)"
  if "$py" -m pip download -q --no-deps --only-binary=:all: -d "$build" "lgpio==$version" \
    >/dev/null 2>&1; then
    rm -rf "$build"
    return 0
  fi
  echo "setup: no lgpio $version wheel for $tag: building it (gcc, python3-dev, swig $(pin_of swig))"
  "$py" -m venv "$build/venv"
  "$build/venv/bin/python" -m pip install -q -c "$CONSTRAINTS" pip setuptools wheel swig
  # --no-build-isolation: the isolated build env would hide the venv's swig module from its launcher
  PATH="$build/venv/bin:$PATH" PYPI=1 "$build/venv/bin/python" -m pip wheel -q --no-deps \
    --no-build-isolation --no-binary lgpio -w "$wheels" "lgpio==$version"
  rm -rf "$build"
}

# agentd's build of pywebrtc-audio (issue 22): the PyPI wheel exposes none of AEC3's own config,
# so the pinned sdist is built with pywebrtc-audio-aec3-config.patch (the bindings:
# EchoCanceller(rate, channels, stream_delay_ms, config={"dotted.field": value}), subnormals
# flushed while WebRTC runs; AEC3's render buffer: no decimation nothing reads). The build names
# itself with a PEP 440 local version, <pin>+agentd.<first 8 hex of the patch's sha256>: a changed
# patch is a new version (rebuilt), and constraints.txt's public ==<pin> still matches it.
AEC3_PATCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pywebrtc-audio-aec3-config.patch"
# the sdist the patch was made against, as PyPI served it: any other content fails the build
AEC3_SDIST_VERSION=0.2.0
AEC3_SDIST_SHA256=cdc47c063439b033bdd6110d2e1119fd6e36c6e007ed824bc369c9a5e3cb307a
# built wheels, shared by every clone of this user (scripts/install, as root, uses its wheelhouse)
AEC3_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/agentd/wheels"

# aec3_version: the local version agentd's build of pywebrtc-audio carries.
aec3_version() {
  echo "$(pin_of pywebrtc-audio)+agentd.$(sha256sum "$AEC3_PATCH" | cut -c1-8)"
}

# ensure_aec3_wheel PYTHON WHEELHOUSE: put agentd's pywebrtc-audio wheel for PYTHON into
# WHEELHOUSE (from the per-user cache shared by every clone, or built: download the pinned sdist,
# check its sha256, patch, build with the pinned scikit-build-core/pybind11/cmake/ninja); the
# caller then installs "pywebrtc-audio==$(aec3_version)". A build needs g++ and patch (installed
# here, only then) and python3-dev. Not in $(...): set -e must stop it at its first failing step.
ensure_aec3_wheel() {
  local py="$1" wheels="$2" version tag name build jobs t0
  version="$(aec3_version)"
  if [ "$(pin_of pywebrtc-audio)" != "$AEC3_SDIST_VERSION" ]; then
    echo "setup: constraints.txt pins pywebrtc-audio $(pin_of pywebrtc-audio), but the patch and" \
      "the recorded sdist hash are for $AEC3_SDIST_VERSION: update both (scripts/lib/setup.sh)" >&2
    return 1
  fi
  tag="$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  name="pywebrtc_audio-$version-$tag-$tag-*.whl"
  mkdir -p "$wheels"
  if ! compgen -G "$wheels/$name" >/dev/null; then
    if ! compgen -G "$AEC3_CACHE/$name" >/dev/null; then
      echo "setup: building pywebrtc-audio $version (AEC3 with agentd's config patch) for $tag"
      t0="$(date +%s)"
      command -v g++ >/dev/null && command -v patch >/dev/null || ensure_apt_packages g++ patch
      build="$(mktemp -d)"
      "$py" -m venv "$build/venv"
      "$build/venv/bin/python" -m pip install -q -c "$CONSTRAINTS" pip scikit-build-core pybind11 \
        cmake ninja
      # --no-build-isolation: pip reads the sdist's metadata with these build tools; isolated, it
      # would build them from source too (--no-binary :all: reaches the build environment)
      "$build/venv/bin/python" -m pip download -q --no-deps --no-build-isolation --no-binary :all: \
        -d "$build" "pywebrtc-audio==$AEC3_SDIST_VERSION" >/dev/null
      if ! echo "$AEC3_SDIST_SHA256  $build/pywebrtc_audio-$AEC3_SDIST_VERSION.tar.gz" |
        sha256sum --check --status; then
        echo "setup: pywebrtc_audio-$AEC3_SDIST_VERSION.tar.gz is not the sdist agentd's patch was" \
          "made against (sha256 $(sha256sum "$build"/*.tar.gz | cut -c1-64), want" \
          "$AEC3_SDIST_SHA256): not building it" >&2
        rm -rf "$build"
        return 1
      fi
      tar -xzf "$build/pywebrtc_audio-$AEC3_SDIST_VERSION.tar.gz" -C "$build"
      (cd "$build/pywebrtc_audio-$AEC3_SDIST_VERSION" && patch -s -p1 <"$AEC3_PATCH" &&
        sed -i "s/^version = \"$AEC3_SDIST_VERSION\"$/version = \"$version\"/" pyproject.toml &&
        grep -q "^version = \"$version\"$" pyproject.toml)
      # one compiler job per 700 MB of RAM, at most one per core: a Pi Zero 2 (512 MB) builds
      # with one instead of swapping to death with four
      jobs="$(awk '/^MemTotal:/ {print int($2 / 700000)}' /proc/meminfo)"
      [ "${jobs:-0}" -ge 1 ] || jobs=1
      [ "$jobs" -le "$(nproc)" ] || jobs="$(nproc)"
      mkdir -p "$AEC3_CACHE"
      PATH="$build/venv/bin:$PATH" CMAKE_BUILD_PARALLEL_LEVEL="$jobs" nice -n 19 \
        "$build/venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$build/dist" \
        "$build/pywebrtc_audio-$AEC3_SDIST_VERSION" >"$build/build.log" 2>&1 ||
        { tail -n 30 "$build/build.log" >&2; rm -rf "$build"; return 1; }
      cp "$build"/dist/pywebrtc_audio-"$version"-*.whl "$AEC3_CACHE/"
      rm -rf "$build"
      echo "setup: built pywebrtc-audio $version in $(($(date +%s) - t0)) s ($jobs jobs)"
    fi
    [ "$AEC3_CACHE" -ef "$wheels" ] ||
      cp "$AEC3_CACHE"/pywebrtc_audio-"$version"-"$tag"-"$tag"-*.whl "$wheels/"
  fi
}

# ensure_venv DIR EXTRAS: create DIR, install the project (editable) with EXTRAS, pinned by
# constraints.txt; skip when the stamp says neither pyproject.toml nor the pins changed since.
ensure_venv() {
  local venv="$1" extras="$2" root stamp want aec=()
  root="$(pwd)"
  stamp="$venv/.agentd-stamp"
  want="$(cat pyproject.toml "$CONSTRAINTS" "$AEC3_PATCH" | sha256sum | cut -d' ' -f1) $extras $root"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    "$(pick_python)" -m venv "$venv"
  fi
  echo "setup: installing agentd$extras into $venv"
  "$venv/bin/python" -m pip install -q -c "$CONSTRAINTS" --upgrade pip setuptools wheel
  ensure_lgpio_wheel "$venv/bin/python" "$venv/wheels"
  # the extras that pull pywebrtc-audio (aec: echo.mode aec; wake: its noise suppressor) get
  # agentd's build, named exactly: a stock 0.2.0 already in the venv would satisfy the pin
  if [[ "$extras" =~ [[,](aec|wake)[],] ]]; then
    ensure_aec3_wheel "$venv/bin/python" "$venv/wheels"
    aec=("pywebrtc-audio==$(aec3_version)")
  fi
  "$venv/bin/python" -m pip install -q -c "$CONSTRAINTS" --find-links "$venv/wheels" -e ".$extras" \
    "${aec[@]}"
  echo "$want" >"$stamp"
}
