# Peer: Debian's haproxy (2.6). Each HAProxy test starts its own haproxy on
# loopback with a generated configuration and an admin socket in a
# temporary directory (phoenix_lb::haproxy::LocalHaproxy) and stops it, so
# nothing is started here: this only installs the binary and says where it
# is. Sourced by scripts/test (which provides apt_install and
# set -euo pipefail).
apt_install haproxy
PHOENIX_HAPROXY="$(command -v haproxy || true)"
[ -x "$PHOENIX_HAPROXY" ] || PHOENIX_HAPROXY=/usr/sbin/haproxy
export PHOENIX_HAPROXY
echo "haproxy: $PHOENIX_HAPROXY ($("$PHOENIX_HAPROXY" -v 2>&1 | sed -n 1p))" >&2
