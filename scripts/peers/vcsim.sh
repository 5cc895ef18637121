# Peer: vcsim, the vSphere (vim25 SOAP) simulator in govmomi. Debian ships
# govmomi 0.24 as a Go source package (golang-github-vmware-govmomi-dev)
# with the `simulator` package but no `vcsim` command, so this builds the
# small main in scripts/peers/vcsim/ in GOPATH mode and starts it on
# loopback with TLS (the certificate is self-signed, like a vCenter with
# its own CA: the tests pin its SHA-256 thumbprint).
# Sourced by scripts/test (which provides apt_install, free_port,
# wait_port, on_exit and set -euo pipefail).

apt_install golang-go golang-github-vmware-govmomi-dev curl

vcsim_src="scripts/peers/vcsim/main.go"
vcsim_bin="$PHOENIX_PEERS_DIR/vcsim"
vcsim_gopath="$PHOENIX_PEERS_DIR/vcsim-build"
# Rebuild only when the main changed (or was never built).
if [ ! -x "$vcsim_bin" ] || [ "$vcsim_src" -nt "$vcsim_bin" ]; then
  echo "building vcsim into $vcsim_bin" >&2
  mkdir -p "$vcsim_gopath/src/phoenix-vcsim" "$vcsim_gopath/cache"
  cp "$vcsim_src" "$vcsim_gopath/src/phoenix-vcsim/main.go"
  (cd "$vcsim_gopath/src/phoenix-vcsim" &&
    GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE="$vcsim_gopath/cache" \
      go build -o "$vcsim_bin" .) >"$PHOENIX_PEERS_DIR/vcsim-build.log" 2>&1 \
    || { tail -n 20 "$PHOENIX_PEERS_DIR/vcsim-build.log" >&2; exit 1; }
fi

vcsim_port="$(free_port)"
vcsim_out="$PHOENIX_PEERS_DIR/vcsim.out"
: >"$vcsim_out"
"$vcsim_bin" -l "127.0.0.1:$vcsim_port" -login "phoenix:vcsim-pass" >"$vcsim_out" 2>"$PHOENIX_PEERS_DIR/vcsim.log" &
vcsim_pid=$!
on_exit "kill $vcsim_pid 2>/dev/null; wait $vcsim_pid 2>/dev/null"

if ! wait_port "$vcsim_port" 60; then
  tail -n 20 "$PHOENIX_PEERS_DIR/vcsim.log" >&2 || true
  exit 1
fi
# The main prints its URL and certificate thumbprint once it listens.
for _ in $(seq 1 50); do grep -q '^THUMBPRINT=' "$vcsim_out" && break; sleep 0.1; done
PHOENIX_VCSIM_THUMBPRINT="$(sed -n 's/^THUMBPRINT=//p' "$vcsim_out")"
[ -n "$PHOENIX_VCSIM_THUMBPRINT" ] || { echo "vcsim printed no thumbprint" >&2; exit 1; }
# Wait until it answers SOAP, not only until the port opens.
for i in $(seq 1 50); do
  curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$vcsim_port/about" | grep -q 200 && break
  [ "$i" -eq 50 ] && { echo "vcsim does not answer" >&2; exit 1; }
  sleep 0.1
done
PHOENIX_VCSIM_URL="https://phoenix:vcsim-pass@127.0.0.1:$vcsim_port/sdk"
export PHOENIX_VCSIM_URL PHOENIX_VCSIM_THUMBPRINT
echo "vcsim: $PHOENIX_VCSIM_URL (pid $vcsim_pid, thumbprint $PHOENIX_VCSIM_THUMBPRINT, log $PHOENIX_PEERS_DIR/vcsim.log)" >&2
