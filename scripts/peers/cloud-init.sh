# Peer: Debian's cloud-init, whose `cloud-init schema --config-file` and
# user-data parser check what phoenix-config renders. Sourced by
# scripts/test (which provides apt_install and set -euo pipefail).
apt_install cloud-init
PHOENIX_CLOUD_INIT="$(command -v cloud-init)"
export PHOENIX_CLOUD_INIT
echo "cloud-init: $PHOENIX_CLOUD_INIT ($("$PHOENIX_CLOUD_INIT" --version 2>&1))" >&2
