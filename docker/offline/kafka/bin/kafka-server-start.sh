#!/bin/sh
# kafka-server-start.sh server.properties — runs the broker/controller in the foreground.
set -eu
[ $# -ge 1 ] || { echo "usage: kafka-server-start.sh server.properties [--override k=v ...]" >&2; exit 1; }
: "${KAFKA_HEAP_OPTS:=-Xmx1G -Xms1G}"
: "${KAFKA_LOG4J_OPTS:=-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties}"
export KAFKA_HEAP_OPTS KAFKA_LOG4J_OPTS
exec /opt/kafka/bin/kafka-run-class.sh kafka.Kafka "$@"
