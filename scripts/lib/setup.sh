# Shared set-up for scripts/test, scripts/demo and scripts/install: apt packages, .venv, pip.
# Idempotent and quiet when everything is already there.

APT_PACKAGES=(
  # build pyalsaaudio / systemd-python from source
  gcc python3 python3-dev python3-venv pkg-config libasound2-dev libsystemd-dev
  # sound tools, speech for tests and the demo
  alsa-utils espeak-ng sox
  # real-time audio rig: PulseAudio null sink reached through the ALSA pulse plugin
  pulseaudio pulseaudio-utils libasound2-plugins
  # systemd-analyze for the unit tests
  systemd
  # the unit's sandbox emulated for tests/test_shipped.py (bubblewrap + setpriv)
  bubblewrap
)

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

# ensure_venv DIR EXTRAS: create DIR, install the project (editable) with EXTRAS; skip when the
# stamp says pyproject.toml has not changed since the last install.
ensure_venv() {
  local venv="$1" extras="$2" root stamp want
  root="$(pwd)"
  stamp="$venv/.agentd-stamp"
  want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras $root"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    "$(pick_python)" -m venv "$venv"
  fi
  echo "setup: installing agentd$extras into $venv"
  "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
  "$venv/bin/python" -m pip install -q -e ".$extras"
  echo "$want" >"$stamp"
}
