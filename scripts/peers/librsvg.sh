# Peer: Debian's librsvg2-bin, whose `rsvg-convert` renders the timelines
# `phoenix report` draws (SVG) to PNG, as a person would see them (the
# phoenix command's test `the_timeline_renders_to_png`). Sourced by
# scripts/test (which provides apt_install and set -euo pipefail).
apt_install librsvg2-bin
echo "rsvg-convert: $(command -v rsvg-convert) ($(rsvg-convert --version 2>&1))" >&2
