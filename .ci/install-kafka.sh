#!/usr/bin/env bash
# Fetch what the Apache Kafka test broker needs; safe to run again (skips what is present).
#   1. the Kafka jars (kafka/pom.xml, from Maven Central) into kafka/jars/
#   2. kcat (Debian package), used by tests and for poking at topics by hand
# Needs: Java 17 + Maven on PATH. Env: COLDSTREAM_KAFKA_JARS overrides the jar directory
# (the same variable devtools/brokers.py reads).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jars="${COLDSTREAM_KAFKA_JARS:-$repo/kafka/jars}"

if compgen -G "$jars/kafka_2.13-*.jar" >/dev/null && compgen -G "$jars/slf4j-reload4j-*.jar" >/dev/null; then
  echo "kafka jars: present in $jars"
else
  command -v mvn >/dev/null || { echo "install-kafka: mvn not found (apt-get install maven)" >&2; exit 1; }
  echo "kafka jars: resolving with Maven into $jars"
  mvn -q -B -Dstyle.color=never -f "$repo/kafka/pom.xml" dependency:copy-dependencies \
    -Dkafka.jars.dir="$jars"
  if ! compgen -G "$jars/kafka_2.13-*.jar" >/dev/null; then
    echo "install-kafka: Maven finished but $jars has no kafka_2.13 jar" >&2
    exit 1
  fi
  echo "kafka jars: $(find "$jars" -name '*.jar' | wc -l) jars in $jars"
fi

if command -v kcat >/dev/null; then
  echo "kcat: $(command -v kcat)"
else
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "kcat: installing with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends kcat >/dev/null
  echo "kcat: $(command -v kcat)"
fi
