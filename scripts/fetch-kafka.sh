#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars for the tests (kafka_2.13 + runtime dependencies, versions in
# scripts/kafka-pom.xml) into ~/.cache/pgcarry/kafka-<version>/libs. Idempotent: instant when cached.
set -euo pipefail
[ "${PGCARRY_NO_KAFKA:-0}" = 1 ] && exit 0
here=$(cd "$(dirname "$0")" && pwd)
pom="$here/kafka-pom.xml"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
cache="${PGCARRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pgcarry}"
dest="$cache/kafka-$version"
# .complete holds the pom's checksum: editing the pom fetches again.
sum=$(sha256sum "$pom" | cut -d' ' -f1)
if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$sum" ]; then
  echo "kafka $version jars: $dest/libs (cached)"
  exit 0
fi
for tool in mvn java; do
  command -v "$tool" >/dev/null || { echo "fetch-kafka: $tool is missing (run: make system-deps)" >&2; exit 1; }
done
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetching kafka $version jars ..."
start=$(date +%s)
if ! mvn -B -q -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$tmp/libs" >"$tmp/mvn.log" 2>&1; then
  tail -40 "$tmp/mvn.log" >&2
  echo "fetch-kafka: maven could not fetch the kafka jars" >&2
  exit 1
fi
ls "$tmp/libs"/kafka_2.13-"$version".jar >/dev/null
rm -rf "$dest"
mv "$tmp" "$dest"
rm -f "$dest/mvn.log"
echo "$sum" >"$dest/.complete"
echo "kafka $version jars: $dest/libs ($(ls "$dest/libs" | wc -l) jars, $(( $(date +%s) - start ))s)"
