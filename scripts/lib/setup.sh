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

# ensure_venv DIR EXTRAS: create DIR, install the project (editable) with EXTRAS, pinned by
# constraints.txt; skip when the stamp says neither pyproject.toml nor the pins changed since.
ensure_venv() {
  local venv="$1" extras="$2" root stamp want
  root="$(pwd)"
  stamp="$venv/.agentd-stamp"
  want="$(cat pyproject.toml "$CONSTRAINTS" | sha256sum | cut -d' ' -f1) $extras $root"
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
  "$venv/bin/python" -m pip install -q -c "$CONSTRAINTS" --find-links "$venv/wheels" -e ".$extras"
  echo "$want" >"$stamp"
}
