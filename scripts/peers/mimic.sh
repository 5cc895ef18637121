# Peer: Mimic, Rackspace's API-compatible mock (PyPI `mimic`): identity
# v2.0, Nova, the Nova images API, Glance (list), Cloud Load Balancers and
# their control endpoints. The OpenStack adapters' tests run against it.
# Sourced by scripts/test (which provides apt_install, free_port,
# wait_port, on_exit and set -euo pipefail).
#
# Mimic 2.2 needs attrs<24 and twisted<23 on Python 3.11. It keeps time on
# a clock of its own that only its /mimic/v1.1/tick endpoint advances
# (builds and balancer updates wait for it), which the tests use.

mimic_venv="$PHOENIX_PEERS_DIR/mimic-venv"
if ! "$mimic_venv/bin/python" -c 'import mimic, twisted' >/dev/null 2>&1; then
  if ! python3 -m venv "$mimic_venv" >/dev/null 2>&1; then
    apt_install python3-venv
    python3 -m venv "$mimic_venv"
  fi
  echo "installing mimic into $mimic_venv" >&2
  "$mimic_venv/bin/pip" install --quiet --disable-pip-version-check \
    'mimic' 'attrs<24' 'twisted<23' >"$PHOENIX_PEERS_DIR/mimic-pip.log" 2>&1 \
    || { tail -n 20 "$PHOENIX_PEERS_DIR/mimic-pip.log" >&2; exit 1; }
fi

mimic_port="$(free_port)"
# --pidfile= : no pid file (several runs may share a directory).
( cd "$PHOENIX_PEERS_DIR" && exec "$mimic_venv/bin/twistd" -n --pidfile= \
    --logfile="$PHOENIX_PEERS_DIR/mimic.log" \
    mimic --listen "tcp:$mimic_port:interface=127.0.0.1" ) \
  >"$PHOENIX_PEERS_DIR/mimic.out" 2>&1 &
mimic_pid=$!
on_exit "kill $mimic_pid 2>/dev/null; wait $mimic_pid 2>/dev/null"

if ! wait_port "$mimic_port" 60; then
  tail -n 20 "$PHOENIX_PEERS_DIR/mimic.out" "$PHOENIX_PEERS_DIR/mimic.log" >&2 || true
  exit 1
fi
PHOENIX_MIMIC_URL="http://127.0.0.1:$mimic_port"
export PHOENIX_MIMIC_URL

# The port opens before every plugin is loaded: wait until identity answers.
"$mimic_venv/bin/python" - "$PHOENIX_MIMIC_URL" <<'EOF' >&2
import json, sys, time, urllib.request
url = sys.argv[1] + "/identity/v2.0/tokens"
body = json.dumps({"auth": {"RAX-KSKEY:apiKeyCredentials":
                            {"username": "peer-check", "apiKey": "k"}}}).encode()
for _ in range(100):
    try:
        req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    time.sleep(0.1)
else:
    sys.exit("mimic identity did not answer at " + url)
EOF
echo "mimic: $PHOENIX_MIMIC_URL (pid $mimic_pid, log $PHOENIX_PEERS_DIR/mimic.log)" >&2
