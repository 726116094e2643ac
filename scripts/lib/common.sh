# Shared by scripts/*: where easel keeps its per-user cache, and small helpers.
# Everything downloaded lives outside the repo, so a clean clone reuses it.
EASEL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EASEL_CACHE=${EASEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/easel}
EASEL_VENV=${EASEL_VENV:-$EASEL_CACHE/py}
EASEL_PY=$EASEL_VENV/bin/python

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Creates the per-user Python environment that carries libtorch (and, for tests, diffusers).
ensure_venv() {
  if [ ! -x "$EASEL_PY" ]; then
    command -v python3 >/dev/null || die "python3 is needed to install libtorch from PyPI. Install it (Debian/Ubuntu: sudo apt install python3 python3-venv) and run this again."
    say "creating a Python environment in $EASEL_VENV"
    mkdir -p "$EASEL_CACHE"
    python3 -m venv "$EASEL_VENV" || die "could not create a venv. On Debian/Ubuntu: sudo apt install python3-venv, then run this again."
    "$EASEL_PY" -m pip install -q --upgrade pip
  fi
}

# Installs a requirements file into the venv once; a stamp with the file's hash makes reruns instant.
pip_install_once() {
  local req=$1 name stamp want
  name=$(basename "$req" .txt)
  stamp=$EASEL_VENV/.easel-$name
  want=$( { cat "$req"; echo "${EASEL_TORCH_INDEX_URL:-}"; } | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  say "installing $(grep -v '^#' "$req" | tr '\n' ' ')into $EASEL_VENV (first time only)"
  local extra=()
  [ -n "${EASEL_TORCH_INDEX_URL:-}" ] && extra+=(--extra-index-url "$EASEL_TORCH_INDEX_URL")
  "$EASEL_PY" -m pip install -q "${extra[@]}" -r "$req"
  echo "$want" >"$stamp"
}

# Installs Debian packages that the terminal tests drive (tmux; xterm under Xvfb for sixel), the
# OpenSSH server and client of tests/remote_ssh.rs (about 10 s), and the single-node Slurm of
# tests/batch_slurm.rs (slurm-wlm and munge without recommends, about 15 s) when a command is
# missing and apt-get can run (root, or passwordless sudo). Otherwise says which tests will skip;
# never fails the run for it.
ensure_test_tools() {
  local missing=() lean=() cmd pkg
  for pair in tmux:tmux xterm:xterm Xvfb:xvfb xdotool:xdotool xwd:x11-apps \
      /usr/sbin/sshd:openssh-server ssh:openssh-client; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null || missing+=("$pkg")
  done
  for pair in sbatch:slurm-wlm munged:munge; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || lean+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && [ ${#lean[@]} -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n); else
      say "not installing ${missing[*]} ${lean[*]} (needs root): the tmux/sixel studio tests, the ssh tests and the Slurm batch test will skip"
      return 0
    fi
  fi
  command -v apt-get >/dev/null || { say "no apt-get: the tests needing ${missing[*]} ${lean[*]} will skip"; return 0; }
  say "installing ${missing[*]} ${lean[*]} for the terminal, ssh and Slurm tests (first time only)"
  # The tests start sshd, munged and Slurm themselves on 127.0.0.1: keep the packages from
  # starting (and enabling) system services on port 22 or anywhere else while they install.
  local policy=/usr/sbin/policy-rc.d placed=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null && "${sudo[@]}" chmod 755 "$policy" && placed=1
  fi
  "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || true
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
      || say "could not install ${missing[*]}: the tmux/sixel studio and ssh tests will skip"
  fi
  if [ ${#lean[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${lean[@]}" \
      >/dev/null 2>&1 || say "could not install ${lean[*]}: the Slurm batch test will skip"
  fi
  [ -n "$placed" ] && "${sudo[@]}" rm -f "$policy"
  return 0
}
