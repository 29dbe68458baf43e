#!/usr/bin/env bash
# build.sh — build Wiber's container images with no container registry.
#
# Our machines reach package registries (Debian, Maven Central, the Go module
# proxy, ...) but no container registry, so `docker pull` fails. This
# script makes every image from packages instead:
#
#   wiber-base:<hash>       debootstrap minbase + ca-certificates + openjdk-17-jre-headless
#   wiber-base-slim:<hash>  debootstrap minbase + ca-certificates (no Java: ~1/4 the size)
#   wiber-base-postgres:<hash>  debootstrap minbase + ca-certificates + postgresql-15
#   wiber-kafka:<tag>       Apache Kafka jars from Maven Central on wiber-base
#   wiber-postgres:<tag>    PostgreSQL 15 + entrypoint applying server/sql/ferretdb-postgres.sql
#   wiber-ferretdb:<tag>    FerretDB static binary (PostgreSQL backend) on wiber-base-slim
#   wiber-server:<tag>      our release binary target/release/wiber-server on wiber-base-slim
#
# Each tag is a hash of that image's inputs; a build is skipped when
# `docker image inspect` finds the tag, so a rerun with unchanged inputs takes
# seconds. Every image is also tagged :offline (what compose and wiberctl use).
# Downloads, rootfs tarballs and build contexts are cached under
# $REPO/.wiber/images (git-ignored).
#
# Usage: docker/offline/build.sh [--only LIST] [--force] [-h]
#   --only LIST   comma-separated subset of: base,slim,pgbase,kafka,postgres,ferretdb,server
#                 (bases are built when an image needs them). Asking for `server`
#                 fails when the binary is missing; by default it is skipped.
#   --force       rebuild the selected images even when their tag exists
#
# Environment (all optional):
#   WIBER_SERVER_BIN        release binary (default $REPO/target/release/wiber-server)
#   WIBER_KAFKA_VERSION     Apache Kafka version from Maven Central (default 4.4.0)
#   WIBER_LOG4J_VERSION     log4j2 version of the slf4j binding (default: matches Kafka's)
#   WIBER_FERRETDB_VERSION  FerretDB module version (default v1.24.2)
#   WIBER_FERRETDB_BIN      use this FerretDB binary instead of building one
#   WIBER_DEBIAN_MIRROR     Debian mirror URL (default: read from the apt sources)
#   WIBER_IMAGES_DIR        cache folder (default $REPO/.wiber/images)
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export REPO
CACHE="${WIBER_IMAGES_DIR:-$REPO/.wiber/images}"
# Same default and variable as wiberctl's provisioning (cli/src/provision.rs).
KAFKA_VERSION="${WIBER_KAFKA_VERSION:-4.4.0}"
# The slf4j->log4j2 binding must match the log4j-api that Kafka brings.
case "$KAFKA_VERSION" in
  4.0.*|4.1.*) LOG4J_DEFAULT=2.24.3 ;;
  *) LOG4J_DEFAULT=2.25.5 ;;
esac
LOG4J_VERSION="${WIBER_LOG4J_VERSION:-$LOG4J_DEFAULT}"
FERRETDB_VERSION="${WIBER_FERRETDB_VERSION:-v1.24.2}"
SERVER_BIN="${WIBER_SERVER_BIN:-$REPO/target/release/wiber-server}"
SUITE=bookworm
# The legacy builder: the client here has no buildx plugin (Debian's docker.io
# 20.10 ships none, and a newer client refuses BuildKit without it). The legacy
# builder uses a local FROM image as is and never pulls one that exists locally.
export DOCKER_BUILDKIT=0

# shellcheck source=docker/offline/ensure-engine.sh
. "$HERE/ensure-engine.sh"

# --- output helpers ----------------------------------------------------------
STEP="start"
log() { printf '[build] %s\n' "$*" >&2; }
die() {
  printf '[build] ERROR in step "%s": %s\n' "$STEP" "$1" >&2
  [ -n "${2:-}" ] && printf '[build]   fix: %s\n' "$2" >&2
  exit 1
}
on_err() { printf '[build] ERROR: step "%s" failed (line %s, exit %s); see the output above.\n' "$STEP" "$1" "$2" >&2; }
trap 'on_err "$LINENO" "$?"' ERR

hash_str() { printf '%s' "$1" | sha256sum | cut -c1-12; }
# Content hash of files (names relative to their folder + bytes), stable across paths.
hash_files() {
  local f
  for f in "$@"; do printf '%s\n' "$(basename "$f")"; cat "$f"; done | sha256sum | cut -c1-12
}
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
image_size() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1000/1000}'; }

declare -a SUMMARY=()
note_image() { # name tag seconds how
  SUMMARY+=("$(printf '%-16s %-36s %8s  %4ss  %s' "$1" "$2" "$(image_size "$1:$2")" "$3" "$4")")
  docker tag "$1:$2" "$1:offline"
}

# --- arguments -----------------------------------------------------------------
ONLY="" FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --only) [ $# -ge 2 ] || { STEP=args; die "--only needs a list" "e.g. --only kafka,ferretdb"; }; ONLY="$2"; shift 2 ;;
    --only=*) ONLY="${1#--only=}"; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n "2,/^set -Eeuo/p" "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) STEP=args; die "unknown argument '$1'" "run with --help" ;;
  esac
done
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
for w in ${ONLY//,/ }; do
  case "$w" in base|slim|pgbase|kafka|postgres|ferretdb|server) ;; *) STEP=args; die "unknown image '$w' in --only" "use base,slim,pgbase,kafka,postgres,ferretdb,server" ;; esac
done

T_START=$SECONDS
mkdir -p "$CACHE"

# --- engine --------------------------------------------------------------------
STEP="engine"
ensure_engine

# --- Debian mirror from the machine's apt sources --------------------------------
# Never written into the repository: read at run time from one-line *.list files
# and deb822 *.sources files (the first `deb` entry that carries $SUITE).
find_mirror() {
  local f
  if [ -n "${WIBER_DEBIAN_MIRROR:-}" ]; then echo "$WIBER_DEBIAN_MIRROR"; return 0; fi
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    # deb [opts] URI SUITE COMPONENTS...
    awk -v suite="$SUITE" '
      $1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i+1) == suite && $i ~ /^https?:\/\//) { print $i; exit } }' "$f"
  done | head -n 1 | grep . && return 0
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    # deb822 stanzas separated by blank lines; fields Types/URIs/Suites/Enabled.
    awk -v suite="$SUITE" '
      function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " suite " "))
                           { n = split(uris, u, " "); for (k = 1; k <= n; k++) if (u[k] ~ /^https?:\/\//) { print u[k]; found = 1; exit } }
                         types = uris = suites = ""; enabled = "yes" }
      BEGIN { enabled = "yes" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:"   { $1 = ""; types = $0 }
      tolower($1) == "uris:"    { $1 = ""; uris = $0 }
      tolower($1) == "suites:"  { $1 = ""; suites = $0 }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      END { if (!found) flush() }' "$f"
  done | head -n 1 | grep .
}

# --- base images (debootstrap -> tar -> docker import) ---------------------------
ensure_debootstrap() {
  command -v debootstrap >/dev/null 2>&1 && return 0
  log "installing debootstrap via apt"
  # Lock::Timeout: wait for another apt (e.g. a docker.io install) instead of failing.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 ||
    { apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends debootstrap >/dev/null; } ||
    die "could not install debootstrap" "run 'apt-get update && apt-get install debootstrap' by hand"
}

base_tag() { hash_str "$SUITE minbase $1 recipe-2"; }  # bump recipe-N when the cleanup changes
base_tarball() { printf '%s/rootfs/%s-%s.tar' "$CACHE" "$1" "$(base_tag "$2")"; }
base_needed() { [ "$FORCE" -eq 1 ] || ! have_image "$1:$(base_tag "$2")"; }

# make_rootfs NAME INCLUDES: debootstrap into a folder, trim it, tar it (cached).
make_rootfs() {
  local name="$1" include="$2"
  local tag; tag="$(base_tag "$include")"
  local tarball; tarball="$(base_tarball "$name" "$include")"
  STEP="$name rootfs"
  if [ "$FORCE" -eq 0 ] && [ -s "$tarball" ]; then return 0; fi
  # One .deb cache per base: both debootstraps run at the same time.
  mkdir -p "$CACHE/rootfs" "$CACHE/debs-$name"
  ensure_debootstrap
  local mirror
  mirror="$(find_mirror)" || die "no Debian '$SUITE' mirror found in /etc/apt/sources.list{,.d/*.list,.d/*.sources}" \
    "set WIBER_DEBIAN_MIRROR to a Debian mirror URL your apt can reach"
  local dir="$CACHE/rootfs/$name-$tag.d" t1=$SECONDS
  rm -rf "$dir"
  log "debootstrap $SUITE minbase + $include (mirror from apt sources)"
  # --cache-dir keeps the .debs, so a rebuild downloads nothing.
  debootstrap --variant=minbase --include="$include" --cache-dir="$CACHE/debs-$name" \
    "$SUITE" "$dir" "$mirror" >"$CACHE/rootfs/$name-$tag.log" 2>&1 ||
    { tail -n 20 "$CACHE/rootfs/$name-$tag.log" >&2
      die "debootstrap failed (log: $CACHE/rootfs/$name-$tag.log)" \
          "check that apt can reach the mirror; remove $dir and rerun"; }
  log "debootstrap $name took $((SECONDS - t1)) s, rootfs $(du -sh "$dir" | cut -f1)"
  # Trim what a container never needs, and forget the mirror: the image's
  # apt sources are emptied so no mirror name travels inside the image.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
         "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
         "$dir"/var/log/* "$dir"/tmp/*
  # PostgreSQL's package makes a cluster "main" at install time; the image makes its
  # own in a volume at first start (nothing there for the other bases).
  rm -rf "$dir"/var/lib/postgresql/*/main "$dir"/etc/postgresql/*/main
  printf '# emptied by wiber build.sh: add a Debian source here to use apt\n' >"$dir/etc/apt/sources.list"
  # Containers get their resolv.conf/hosts/hostname from the engine.
  : >"$dir/etc/resolv.conf"; : >"$dir/etc/hostname"
  tar --numeric-owner -C "$dir" -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
  rm -rf "$dir"
}

# import_base NAME INCLUDES -> sets BASE_TAG
import_base() {
  local name="$1" include="$2" t0=$SECONDS
  local tag; tag="$(base_tag "$include")"
  local tarball; tarball="$(base_tarball "$name" "$include")"
  BASE_TAG="$tag"
  STEP="$name"
  if [ "$FORCE" -eq 0 ] && have_image "$name:$tag"; then
    log "$name:$tag exists: skipped"
    note_image "$name" "$tag" 0 cached
    return 0
  fi
  [ -s "$tarball" ] || make_rootfs "$name" "$include"
  log "docker import $name:$tag"
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "wiber $name: debootstrap $SUITE minbase + $include" \
    "$tarball" "$name:$tag" >/dev/null ||
    die "docker import of $tarball failed" "delete $tarball and rerun to debootstrap again"
  note_image "$name" "$tag" "$((SECONDS - t0))" "imported"
}

# docker_build NAME TAG CONTEXT DOCKERFILE [--build-arg ...]
docker_build() {
  local name="$1" tag="$2" ctx="$3" dockerfile="$4" t0=$SECONDS; shift 4
  STEP="$name"
  if [ "$FORCE" -eq 0 ] && have_image "$name:$tag"; then
    log "$name:$tag exists: skipped"
    note_image "$name" "$tag" 0 cached
    return 0
  fi
  log "docker build $name:$tag"
  docker build --quiet --pull=false -t "$name:$tag" -f "$dockerfile" "$@" "$ctx" >/dev/null ||
    die "docker build of $name failed" "rerun: DOCKER_BUILDKIT=0 docker build -f $dockerfile $ctx"
  note_image "$name" "$tag" "$((SECONDS - t0))" built
}

need_java=0 need_slim=0 need_pg=0
if want base || want kafka; then need_java=1; fi
if want slim || want ferretdb || want server; then need_slim=1; fi
if want pgbase || want postgres; then need_pg=1; fi
JAVA_INC="ca-certificates,openjdk-17-jre-headless"
SLIM_INC="ca-certificates"
# Debian's PostgreSQL 15 (what the local runtime runs from /usr/lib/postgresql/15/bin).
PG_INC="ca-certificates,postgresql-15"

# --- Kafka ---------------------------------------------------------------------------
# Jars the image needs beyond what kafka_2.13 pulls in: kafka-tools (the CLI tools
# and the healthcheck's ApiVersions probe) and the slf4j->log4j2 binding (without
# it the broker would log nothing).
kafka_libs_ok() {
  local d="$1" j
  for j in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar" "kafka-clients-$KAFKA_VERSION.jar"; do
    [ -f "$d/$j" ] || return 1
  done
  compgen -G "$d/log4j-core-*.jar" >/dev/null && compgen -G "$d/log4j-slf4j*-impl-*.jar" >/dev/null
}

fetch_kafka_libs() { # -> KAFKA_LIBS
  STEP="kafka-jars"
  # provision.rs (wiberctl) keeps the same version's jars here; reuse them when they
  # include everything the image needs (it does not fetch kafka-tools today).
  local shared="$REPO/.wiber/cache/kafka-$KAFKA_VERSION/libs"
  if kafka_libs_ok "$shared"; then KAFKA_LIBS="$shared"; log "using Kafka jars from $shared"; return 0; fi
  KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
  if kafka_libs_ok "$KAFKA_LIBS"; then log "using cached Kafka jars ($KAFKA_LIBS)"; return 0; fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found" "apt-get install maven"
  command -v unzip >/dev/null 2>&1 || die "unzip not found (needed to index the jars)" "apt-get install unzip"
  local work="$CACHE/kafka-$KAFKA_VERSION" t0=$SECONDS
  mkdir -p "$work"
  rm -rf "$KAFKA_LIBS.partial"
  cat >"$work/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by docker/offline/build.sh: resolves Apache Kafka $KAFKA_VERSION with its runtime dependencies -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>wiber.offline</groupId>
  <artifactId>kafka-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  log "resolving Kafka $KAFKA_VERSION jars with mvn (~1 min cold)"
  (cd "$work" && mvn -B -q -f pom.xml dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$KAFKA_LIBS.partial" >"$work/mvn.log" 2>&1) ||
    { tail -n 20 "$work/mvn.log" >&2
      die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (log: $work/mvn.log)" \
          "check that mvn reaches Maven Central, or pick another WIBER_KAFKA_VERSION"; }
  rm -rf "$KAFKA_LIBS" && mv "$KAFKA_LIBS.partial" "$KAFKA_LIBS"
  kafka_libs_ok "$KAFKA_LIBS" || die "resolved jars lack kafka/tools/log4j ($KAFKA_LIBS)" "inspect $work/mvn.log"
  log "Kafka jars: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) files, $(du -sh "$KAFKA_LIBS" | cut -f1), $((SECONDS - t0)) s"
}

# --- FerretDB --------------------------------------------------------------------------
ferretdb_ok() { [ -x "$1" ] && "$1" --version 2>/dev/null | grep -q "version: $FERRETDB_VERSION"; }

fetch_ferretdb() { # -> FERRETDB_BIN
  STEP="ferretdb-binary"
  local c
  # An explicit binary, then the one wiberctl's provisioning keeps, then ours. Each
  # must run: `go install ...@version` yields a binary that panics at start
  # ("Invalid build/version/version.txt"), because that file is generated upstream.
  for c in "${WIBER_FERRETDB_BIN:-}" "$REPO/.wiber/cache/ferretdb-$FERRETDB_VERSION/bin/ferretdb"; do
    [ -n "$c" ] || continue
    if ferretdb_ok "$c"; then FERRETDB_BIN="$c"; log "using FerretDB binary $c"; return 0; fi
  done
  FERRETDB_BIN="$CACHE/ferretdb-$FERRETDB_VERSION/ferretdb"
  if ferretdb_ok "$FERRETDB_BIN"; then log "using cached FerretDB binary ($FERRETDB_BIN)"; return 0; fi
  command -v go >/dev/null 2>&1 || die "go not found" "install Go (it is on PATH on our machines as /usr/local/go/bin/go)"
  local work="$CACHE/ferretdb-$FERRETDB_VERSION" t0=$SECONDS modir
  mkdir -p "$work"
  log "building FerretDB $FERRETDB_VERSION from the Go module proxy (~4 min cold on 2 cores)"
  # The module source comes through the module proxy; we build from a writable copy
  # because build/version/version.txt must exist (upstream generates it).
  modir="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
           sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')" ||
    die "go mod download github.com/FerretDB/FerretDB@$FERRETDB_VERSION failed" "check that go reaches the Go module proxy"
  [ -d "$modir" ] || die "module directory not found after go mod download" "run: go mod download -json github.com/FerretDB/FerretDB@$FERRETDB_VERSION"
  rm -rf "$work/src" && cp -r "$modir" "$work/src" && chmod -R u+w "$work/src"
  printf '%s\n' "$FERRETDB_VERSION" >"$work/src/build/version/version.txt"
  printf 'wiber-offline\n' >"$work/src/build/version/package.txt"
  (cd "$work/src" && CGO_ENABLED=0 go build -trimpath -o "$FERRETDB_BIN.partial" ./cmd/ferretdb >"$work/go-build.log" 2>&1) ||
    { tail -n 20 "$work/go-build.log" >&2; die "go build of FerretDB failed (log: $work/go-build.log)" "check the Go toolchain (go version) and the log"; }
  mv "$FERRETDB_BIN.partial" "$FERRETDB_BIN"
  rm -rf "$work/src"
  ferretdb_ok "$FERRETDB_BIN" || die "the built FerretDB does not report version $FERRETDB_VERSION" "run $FERRETDB_BIN --version"
  log "FerretDB built in $((SECONDS - t0)) s ($(du -h "$FERRETDB_BIN" | cut -f1))"
}

# --- downloads and rootfs builds, in parallel --------------------------------------
# The slow cold steps share little (debootstrap is mostly dpkg unpacking, the
# FerretDB build is CPU, mvn is network), so they run side by side; each is cached
# and idempotent, and the sequential part below finds their results.
STEP="prepare"
T_PREP=$SECONDS
declare -a prep_pids=() prep_names=()
# Installed once, here: the two rootfs builds below run side by side, and two apt-get
# installs at once fail on dpkg's lock (seen on a cold machine).
if { [ "$need_java" -eq 1 ] && base_needed wiber-base "$JAVA_INC"; } ||
  { [ "$need_slim" -eq 1 ] && base_needed wiber-base-slim "$SLIM_INC"; } ||
  { [ "$need_pg" -eq 1 ] && base_needed wiber-base-postgres "$PG_INC"; }; then
  ensure_debootstrap
fi
prep() { local what="$1"; shift; ( "$@" ) & prep_pids+=("$!"); prep_names+=("$what"); }
if [ "$need_java" -eq 1 ] && base_needed wiber-base "$JAVA_INC"; then prep "wiber-base rootfs" make_rootfs wiber-base "$JAVA_INC"; fi
if [ "$need_slim" -eq 1 ] && base_needed wiber-base-slim "$SLIM_INC"; then prep "wiber-base-slim rootfs" make_rootfs wiber-base-slim "$SLIM_INC"; fi
if [ "$need_pg" -eq 1 ] && base_needed wiber-base-postgres "$PG_INC"; then prep "wiber-base-postgres rootfs" make_rootfs wiber-base-postgres "$PG_INC"; fi
if want kafka; then prep "Kafka jars" fetch_kafka_libs; fi
if want ferretdb; then prep "FerretDB binary" fetch_ferretdb; fi
prep_failed=()
for i in "${!prep_pids[@]}"; do
  wait "${prep_pids[$i]}" || prep_failed+=("${prep_names[$i]}")
done
[ "${#prep_failed[@]}" -eq 0 ] || die "failed: ${prep_failed[*]}" "see the messages above; rerun once fixed (finished parts are cached)"
[ "${#prep_pids[@]}" -eq 0 ] || log "prepared (${prep_names[*]}) in $((SECONDS - T_PREP)) s"

BASE_JAVA_TAG="" BASE_SLIM_TAG="" BASE_PG_TAG=""
if [ "$need_java" -eq 1 ]; then import_base wiber-base "$JAVA_INC"; BASE_JAVA_TAG="$BASE_TAG"; fi
if [ "$need_slim" -eq 1 ]; then import_base wiber-base-slim "$SLIM_INC"; BASE_SLIM_TAG="$BASE_TAG"; fi
if [ "$need_pg" -eq 1 ]; then import_base wiber-base-postgres "$PG_INC"; BASE_PG_TAG="$BASE_TAG"; fi

if want kafka; then
  fetch_kafka_libs
  STEP="wiber-kafka"
  src="$HERE/kafka"
  ctx="$CACHE/ctx/kafka"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp -r "$src/bin" "$src/config" "$src/run" "$src/Dockerfile" "$ctx/"
  # Hard links when on the same filesystem: no copy of ~55 MB per build.
  cp -rl "$KAFKA_LIBS" "$ctx/libs" 2>/dev/null || cp -r "$KAFKA_LIBS" "$ctx/libs"
  # Resolve bin/tools.list against the jars: keep, per script, the first listed
  # class that exists in this Kafka version; drop scripts whose class is gone.
  (cd "$ctx/libs" && for j in *.jar; do unzip -Z1 "$j" 2>/dev/null; done) | grep '\.class$' |
    sed 's/\.class$//; s#/#.#g' | sort -u >"$ctx/classes.txt"
  while read -r script classes; do
    case "$script" in ''|'#'*) continue ;; esac
    for c in $classes; do
      if grep -qxF "$c" "$ctx/classes.txt"; then printf '%s %s\n' "$script" "$c"; continue 2; fi
    done
    log "note: no class for $script in Kafka $KAFKA_VERSION; the image will not have it"
  done <"$src/bin/tools.list" >"$ctx/bin/tools.list"
  if ! grep -q '^kafka-storage.sh ' "$ctx/bin/tools.list" || ! grep -q '^kafka-broker-api-versions.sh ' "$ctx/bin/tools.list"; then
    die "Kafka $KAFKA_VERSION jars lack StorageTool or BrokerApiVersionsCommand" "add the new class names to docker/offline/kafka/bin/tools.list"
  fi
  rm "$ctx/classes.txt"
  mapfile -t files < <(find "$ctx" -type f -not -path "$ctx/libs/*" | sort)
  mapfile -t jars < <(find "$ctx/libs" -type f -name '*.jar' | sort)
  tag="$KAFKA_VERSION-$(hash_str "$BASE_JAVA_TAG $(hash_files "${files[@]}") $(hash_files "${jars[@]}")")"
  docker_build wiber-kafka "$tag" "$ctx" "$ctx/Dockerfile" \
    --build-arg "BASE=wiber-base:$BASE_JAVA_TAG" --build-arg "KAFKA_VERSION=$KAFKA_VERSION"
fi

if want postgres; then
  STEP="wiber-postgres"
  ctx="$CACHE/ctx/postgres"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "$HERE/postgres/Dockerfile" "$HERE/postgres/entrypoint" "$HERE/postgres/healthcheck" "$ctx/"
  # The project's setup, applied by the entrypoint at every start: part of the tag, so a
  # changed setup makes a new image.
  cp "$REPO/server/sql/ferretdb-postgres.sql" "$ctx/"
  pg_version="$(docker run --rm --network none --entrypoint bash "wiber-base-postgres:$BASE_PG_TAG" \
    -c 'ls /usr/lib/postgresql | sort -V | tail -n 1')" ||
    die "wiber-base-postgres:$BASE_PG_TAG has no /usr/lib/postgresql" "delete its rootfs tarball in $CACHE/rootfs and rerun"
  tag="$pg_version-$(hash_str "$BASE_PG_TAG $(hash_files "$ctx/Dockerfile" "$ctx/entrypoint" "$ctx/healthcheck" "$ctx/ferretdb-postgres.sql")")"
  docker_build wiber-postgres "$tag" "$ctx" "$ctx/Dockerfile" \
    --build-arg "BASE=wiber-base-postgres:$BASE_PG_TAG"
fi

if want ferretdb; then
  fetch_ferretdb
  STEP="wiber-ferretdb"
  ctx="$CACHE/ctx/ferretdb"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "$HERE/ferretdb/Dockerfile" "$ctx/Dockerfile"
  ln "$FERRETDB_BIN" "$ctx/ferretdb" 2>/dev/null || cp "$FERRETDB_BIN" "$ctx/ferretdb"
  # Dynamic linking would break on the slim base: insist on a static binary.
  if ldd "$ctx/ferretdb" >/dev/null 2>&1; then
    die "$FERRETDB_BIN is dynamically linked" "build it with CGO_ENABLED=0 (or unset WIBER_FERRETDB_BIN)"
  fi
  tag="$FERRETDB_VERSION-$(hash_str "$BASE_SLIM_TAG $(hash_files "$ctx/Dockerfile" "$ctx/ferretdb")")"
  docker_build wiber-ferretdb "$tag" "$ctx" "$ctx/Dockerfile" \
    --build-arg "BASE=wiber-base-slim:$BASE_SLIM_TAG" --build-arg "FERRETDB_VERSION=$FERRETDB_VERSION"
fi

# --- wiber-server -------------------------------------------------------------------------
SERVER_SKIPPED=""
if want server; then
  STEP="wiber-server"
  if [ ! -x "$SERVER_BIN" ]; then
    if [[ ",$ONLY," == *",server,"* ]]; then
      die "release binary $SERVER_BIN not found" \
          "build it first: cargo build --release -p wiber-server (or set WIBER_SERVER_BIN)"
    fi
    SERVER_SKIPPED="$SERVER_BIN not found (cargo build --release -p wiber-server, then rerun)"
    log "skipping wiber-server: $SERVER_SKIPPED"
  else
    ctx="$CACHE/ctx/server"
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp "$REPO/docker/Dockerfile.server" "$ctx/Dockerfile"
    ln -f "$SERVER_BIN" "$ctx/wiber-server" 2>/dev/null || cp "$SERVER_BIN" "$ctx/wiber-server"
    # The slim base has libc, libgcc, zlib, libssl3 (via ca-certificates); warn
    # early about anything else the binary links so the failure is not at run time.
    if missing="$(ldd "$ctx/wiber-server" 2>/dev/null | grep 'not found')"; then
      die "wiber-server links libraries missing on this machine: $missing" "link them statically or add them to the base"
    fi
    tag="$(hash_str "$BASE_SLIM_TAG $(hash_files "$ctx/Dockerfile" "$ctx/wiber-server")")"
    docker_build wiber-server "$tag" "$ctx" "$ctx/Dockerfile" \
      --build-arg "BASE=wiber-base-slim:$BASE_SLIM_TAG" --build-arg "WIBER_SERVER_BIN=wiber-server"
    STEP="wiber-server smoke test"
    docker run --rm --network none --entrypoint /usr/local/bin/wiber-server "wiber-server:$tag" --help >/dev/null 2>&1 ||
      die "wiber-server:$tag does not start (--help failed)" \
          "docker run --rm wiber-server:$tag --help; likely a shared library missing in wiber-base-slim"
  fi
fi

# --- summary ---------------------------------------------------------------------------------
STEP="summary"
{
  printf '%-16s %-36s %8s  %5s  %s\n' IMAGE TAG SIZE TIME ""
  printf '%s\n' "${SUMMARY[@]}"
  [ -z "$SERVER_SKIPPED" ] || printf 'wiber-server     skipped: %s\n' "$SERVER_SKIPPED"
  printf 'all images are also tagged :offline; total %s s\n' "$((SECONDS - T_START))"
} | tee "$CACHE/summary.txt"
# Machine-readable tags for wiberctl / CI: IMAGE=name:hash-tag lines.
docker image ls --format '{{.Repository}}:{{.Tag}}' | grep -E '^wiber-(base|base-slim|base-postgres|kafka|postgres|ferretdb|server):' |
  grep -v ':offline$' | sort >"$CACHE/tags.txt" || true
