# Peer: moto (PyPI `moto[server]`), a stand-in for EC2, AMIs, tags,
# Elastic IPs, ELBv2 and Auto Scaling. The AWS adapters' tests run against
# it, most of them through the fault-injecting proxy the tests start in
# front of it (moto is instant and always healthy).
# Sourced by scripts/test (which provides free_port, wait_port, on_exit
# and set -euo pipefail).

moto_venv="$PHOENIX_PEERS_DIR/moto-venv"
if ! "$moto_venv/bin/python" -c 'import moto.server, flask' >/dev/null 2>&1; then
  if ! python3 -m venv "$moto_venv" >/dev/null 2>&1; then
    apt_install python3-venv
    python3 -m venv "$moto_venv"
  fi
  echo "installing moto into $moto_venv" >&2
  "$moto_venv/bin/pip" install --quiet --disable-pip-version-check \
    'moto[server]>=5,<6' >"$PHOENIX_PEERS_DIR/moto-pip.log" 2>&1 \
    || { tail -n 20 "$PHOENIX_PEERS_DIR/moto-pip.log" >&2; exit 1; }
fi

moto_port="$(free_port)"
# Like EC2, refuse to launch an AMI that does not exist.
MOTO_ENABLE_AMI_VALIDATION=true "$moto_venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" \
  >"$PHOENIX_PEERS_DIR/moto.log" 2>&1 &
moto_pid=$!
on_exit "kill $moto_pid 2>/dev/null; wait $moto_pid 2>/dev/null"

if ! wait_port "$moto_port" 60; then
  tail -n 20 "$PHOENIX_PEERS_DIR/moto.log" >&2 || true
  exit 1
fi
PHOENIX_MOTO_URL="http://127.0.0.1:$moto_port"
export PHOENIX_MOTO_URL
echo "moto: $PHOENIX_MOTO_URL (pid $moto_pid, log $PHOENIX_PEERS_DIR/moto.log)" >&2
