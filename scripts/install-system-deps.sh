#!/usr/bin/env bash
# Install the Debian packages pgcarry's tests and demo need, when they are missing.
set -euo pipefail
want=(postgresql-15 postgresql-15-wal2json python3-venv)
[ "${PGCARRY_NO_KAFKA:-0}" = 1 ] || want+=(maven default-jre-headless)
# the HTML report's tests render it in a real headless browser
[ "${PGCARRY_NO_BROWSER:-0}" = 1 ] || want+=(chromium)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A JDK or Maven installed outside apt counts too.
if printf '%s\n' "${missing[@]}" | grep -qx maven && command -v mvn >/dev/null; then
  missing=("${missing[@]/maven}"); fi
if printf '%s\n' "${missing[@]}" | grep -qx default-jre-headless && command -v java >/dev/null; then
  missing=("${missing[@]/default-jre-headless}"); fi
read -ra missing <<<"${missing[*]}"
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's package starts a cluster of its own; pgcarry never uses it.
if command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q .; then
  pg_lsclusters -h | while read -r ver name _; do pg_ctlcluster "$ver" "$name" stop || true; done
fi
