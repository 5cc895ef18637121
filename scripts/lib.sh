# Shared helpers for the test script and its peer scripts. Sourced, not run.

# Installs Debian packages that are missing, without prompting.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until a TCP port accepts connections (or fails after $2 seconds).
wait_port() {
  local port=$1 limit=${2:-60} i=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -ge $((limit * 10)) ] && { echo "port $port did not open within ${limit}s" >&2; return 1; }
    sleep 0.1
  done
}

# Cleanup hooks run when the test script exits.
PHOENIX_CLEANUPS=()
on_exit() { PHOENIX_CLEANUPS+=("$1"); }
run_cleanups() {
  for ((i=${#PHOENIX_CLEANUPS[@]}-1; i>=0; i--)); do eval "${PHOENIX_CLEANUPS[$i]}" || true; done
}
