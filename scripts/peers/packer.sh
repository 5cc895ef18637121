# Peer: Debian's packer (1.6). The Packer bake tests
# (phoenix-providers/tests/packer_bake.rs) run `packer build
# -machine-readable` themselves on templates whose builders need no cloud
# (`null` with `shell-local`), so nothing is started here: this only
# installs the binary and says where it is. Sourced by scripts/test (which
# provides apt_install and set -euo pipefail).
apt_install packer
PHOENIX_PACKER="$(command -v packer || true)"
[ -x "$PHOENIX_PACKER" ] || PHOENIX_PACKER=/usr/bin/packer
export PHOENIX_PACKER
echo "packer: $PHOENIX_PACKER ($("$PHOENIX_PACKER" version 2>&1 | sed -n 1p))" >&2
