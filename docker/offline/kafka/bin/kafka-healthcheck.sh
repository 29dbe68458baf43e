#!/bin/bash
# kafka-healthcheck.sh — exit 0 when this node's broker answers an ApiVersions request.
#
# Cheap on purpose: a JVM tool per probe (kafka-broker-api-versions.sh) costs
# ~1.5 s of CPU, too much for a short interval on 2 cores. This sends one raw
# ApiVersions v0 request over bash's /dev/tcp; a broker answers only once it
# processes requests (it enables its listeners after catching up on metadata).
# The listener is the first non-controller one in the rendered server.properties.
# `--tool` runs the JVM tool instead (what compose files written for apache/kafka use).
set -eu
props=/opt/kafka/config/server.properties
[ -r "$props" ] || exit 1
listeners=$(sed -n 's/^listeners=//p' "$props" | tail -n 1)
controllers=$(sed -n 's/^controller.listener.names=//p' "$props" | tail -n 1)
host="" port=""
for l in ${listeners//,/ }; do
  name=${l%%://*}
  case ",$controllers," in *",$name,"*) continue ;; esac
  hostport=${l#*://}; port=${hostport##*:}; host=${hostport%:*}
  case "$host" in ''|0.0.0.0|'[::]') host=127.0.0.1 ;; esac
  break
done
[ -n "$port" ] || exit 1
if [ "${1:-}" = "--tool" ]; then
  exec /opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server "$host:$port" >/dev/null
fi
# size=12 | api_key=18 ApiVersions | version 0 | correlation id 0x57 | client id "hc"
# shellcheck disable=SC2016  # $1/$2 expand in the inner bash, on purpose
reply=$(timeout 5 bash -c '
  exec 3<>"/dev/tcp/$1/$2" || exit 1
  printf "\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x57\x00\x02hc" >&3
  head -c 10 <&3 | od -An -tx1 | tr -d " \n"' _ "$host" "$port") || exit 1
# reply = size(4) correlation id(4) error code(2): want our id and error 0.
[ "${reply:8:8}" = "00000057" ] && [ "${reply:16:4}" = "0000" ]
