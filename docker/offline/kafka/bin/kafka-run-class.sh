#!/bin/sh
# kafka-run-class.sh CLASS [ARGS...] — a small stand-in for Kafka's own launcher
# (the Maven artifacts carry the jars, not the distribution's bin/ scripts).
# Honours the usual launcher variables: KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS,
# KAFKA_GC_LOG_OPTS, KAFKA_JMX_OPTS (+ KAFKA_JMX_PORT / JMX_PORT), KAFKA_LOG4J_OPTS,
# KAFKA_OPTS, KAFKA_DEBUG (remote debugger on port ${DEBUG_PORT:-5005}).
set -eu
base=/opt/kafka
[ $# -ge 1 ] || { echo "usage: kafka-run-class.sh CLASS [ARGS...]" >&2; exit 1; }

# Tools get a small heap and quiet logs; the broker sets its own through the env.
: "${KAFKA_HEAP_OPTS:=-Xmx256M}"
: "${KAFKA_LOG4J_OPTS:=-Dlog4j2.configurationFile=$base/config/tools-log4j2.properties}"
: "${KAFKA_JVM_PERFORMANCE_OPTS:=-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}"
: "${KAFKA_GC_LOG_OPTS:=}"
: "${KAFKA_OPTS:=}"
: "${KAFKA_JMX_OPTS:=}"
jmx_port="${KAFKA_JMX_PORT:-${JMX_PORT:-}}"
if [ -n "$jmx_port" ]; then
  KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false -Dcom.sun.management.jmxremote.port=$jmx_port -Dcom.sun.management.jmxremote.rmi.port=$jmx_port"
fi
debug_opts=""
if [ -n "${KAFKA_DEBUG:-}" ]; then
  debug_opts="-agentlib:jdwp=transport=dt_socket,server=y,suspend=${DEBUG_SUSPEND_FLAG:-n},address=*:${DEBUG_PORT:-5005}"
fi

# Word splitting of the *_OPTS variables is intended (they hold several flags).
# shellcheck disable=SC2086
exec java $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_GC_LOG_OPTS $KAFKA_JMX_OPTS \
  $debug_opts $KAFKA_LOG4J_OPTS $KAFKA_OPTS -cp "$base/libs/*" "$@"
