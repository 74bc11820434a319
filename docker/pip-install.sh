#!/bin/sh
# `pip install` inside the image build (build stage only). When the build got
# an extra CA bundle as the BuildKit secret "ca" (a TLS-intercepting proxy's
# CA), pip trusts it in addition to the usual CAs; without it nothing changes.
set -eu
VENV=/opt/lfs-server
SECRET=/run/secrets/ca
bundle=""
if [ -s "$SECRET" ]; then
  bundle="$(mktemp)"
  base="$("$VENV/bin/python" -c 'import pip._vendor.certifi as c; print(c.where())' 2>/dev/null || true)"
  [ -f "$base" ] || base=/etc/ssl/certs/ca-certificates.crt
  cat "$base" "$SECRET" >"$bundle"
  export PIP_CERT="$bundle" REQUESTS_CA_BUNDLE="$bundle" SSL_CERT_FILE="$bundle"
  echo "pip-install: trusting the extra CA bundle from the build secret"
fi
status=0
PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install "$@" || status=$?
[ -z "$bundle" ] || rm -f "$bundle"
exit "$status"
