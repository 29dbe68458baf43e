//! Provisioning of the third-party pieces the local runtime runs: Apache Kafka (plain jars)
//! and FerretDB (a MongoDB-wire server on SQLite).
//!
//! Why this exists: our machines reach package registries but no container registry and
//! no download sites, so we cannot `docker pull` Kafka or MongoDB, nor fetch a Kafka
//! tarball. What we *can* do is ask Maven for `org.apache.kafka:kafka_2.13` with its
//! runtime dependencies (that is exactly the broker's `libs/` directory) and ask the Go
//! module proxy for FerretDB's source and build it. Both take a while (Kafka ~30 s,
//! FerretDB ~4-5 min on 2 cores), so the result is cached under `<repo>/.wiber/cache/`
//! (git-ignored) and [`ensure`] is a no-op once it has succeeded.
//!
//! Layout of the cache (one directory per version, so a version bump re-provisions and
//! never mixes jars of two versions):
//!
//! ```text
//! .wiber/cache/
//!   provision.lock                 flock(2) taken while provisioning
//!   kafka-4.4.0/pom.xml            generated, lists kafka_2.13 + the log4j slf4j binding
//!   kafka-4.4.0/libs/*.jar         classpath of the broker (`java -cp 'libs/*'`)
//!   kafka-4.4.0/log4j2.properties  quiet console logging (stdout is redirected to a file)
//!   kafka-4.4.0/mvn.log            Maven's output, for diagnosing failures
//!   kafka-4.4.0/.complete          marker, written last
//!   ferretdb-v1.24.2/src/          copy of the module source (the build needs a version.txt)
//!   ferretdb-v1.24.2/bin/ferretdb  the static binary
//!   ferretdb-v1.24.2/go.log
//!   ferretdb-v1.24.2/.complete
//! ```
//!
//! Concurrency: several test binaries (and a `wiberctl` next to them) may call [`ensure`]
//! at once. The fast path only reads the `.complete` markers, which are written after
//! everything else, so it needs no lock; the slow path takes an exclusive `flock` on
//! `provision.lock` and re-checks the markers, so the work is done exactly once.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Kafka version used by the local runtime. 4.x brokers run KRaft only (no ZooKeeper)
/// and need Java 17+. 4.4.0 is the newest line that resolved with all its dependencies
/// here. Override with `WIBER_KAFKA_VERSION` (the cache keeps each version apart).
pub const KAFKA_VERSION: &str = "4.4.0";

/// log4j2 version of the slf4j binding we add to Kafka's classpath. Kafka's Maven
/// artifact does not pull a binding in (its distribution tarball ships one), and without
/// it the broker logs nothing at all. Kept equal to the log4j-api that kafka 4.4.0 brings.
const LOG4J_VERSION: &str = "2.25.5";

/// FerretDB version: the last 1.x (2.x needs a PostgreSQL with the DocumentDB extension;
/// 1.x has a plain SQLite backend, which needs nothing else on the machine).
pub const FERRETDB_VERSION: &str = "v1.24.2";

const FERRETDB_MODULE: &str = "github.com/FerretDB/FerretDB";

/// Upper bounds for the external tools. Generous: a cold FerretDB build takes ~5 min on
/// 2 cores, longer while cargo is building next to it.
const MVN_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const GO_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const LOCK_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// What [`ensure`] provides: everything needed to start a Kafka broker and FerretDB.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Provisioned {
    /// Directory of jars; the broker's classpath is `<kafka_libs>/*`.
    pub kafka_libs: PathBuf,
    /// e.g. "4.4.0".
    pub kafka_version: String,
    /// log4j2 configuration for the broker (console only, INFO for kafka.*, WARN otherwise).
    pub kafka_log4j2_config: PathBuf,
    /// Static FerretDB binary.
    pub ferretdb_bin: PathBuf,
    /// e.g. "v1.24.2".
    pub ferretdb_version: String,
    /// The `java` (17+) used to run Kafka.
    pub java: PathBuf,
    /// `<repo>/.wiber/cache`.
    pub cache_dir: PathBuf,
}

/// Finds the workspace root: `$WIBER_ROOT` if set, else the nearest ancestor of the
/// current directory, then of the current executable, whose `Cargo.toml` declares a
/// `[workspace]`.
pub fn repo_root() -> Result<PathBuf> {
    if let Some(root) = std::env::var_os("WIBER_ROOT") {
        let root = PathBuf::from(root);
        if !root.is_dir() {
            bail!(
                "WIBER_ROOT={} is not a directory: point it at the Wiber repository root",
                root.display()
            );
        }
        return Ok(root);
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for start in &starts {
        for dir in start.ancestors() {
            let manifest = dir.join("Cargo.toml");
            if let Ok(text) = fs::read_to_string(&manifest) {
                if text.lines().any(|l| l.trim() == "[workspace]") {
                    return Ok(dir.to_path_buf());
                }
            }
        }
    }
    bail!(
        "could not find the Wiber repository root (a Cargo.toml with [workspace]) above {:?}; \
         run from inside the repository or set WIBER_ROOT",
        starts
    )
}

/// Makes sure Kafka jars, FerretDB and Java are available under `root/.wiber/cache/` and
/// returns where they are. Idempotent and safe to call from several processes at once;
/// the first call takes minutes (see the module docs), later calls milliseconds.
///
/// Blocking: call it from `tokio::task::spawn_blocking` inside an async context that must
/// stay responsive (a test may simply call it directly).
pub fn ensure(root: &Path) -> Result<Provisioned> {
    let cache_dir = root.join(".wiber").join("cache");
    let kafka_version =
        std::env::var("WIBER_KAFKA_VERSION").unwrap_or_else(|_| KAFKA_VERSION.to_string());
    let kafka_dir = cache_dir.join(format!("kafka-{kafka_version}"));
    let ferret_dir = cache_dir.join(format!("ferretdb-{FERRETDB_VERSION}"));

    let java = find_java()?;
    let provisioned = Provisioned {
        kafka_libs: kafka_dir.join("libs"),
        kafka_version: kafka_version.clone(),
        kafka_log4j2_config: kafka_dir.join("log4j2.properties"),
        ferretdb_bin: ferret_dir.join("bin").join("ferretdb"),
        ferretdb_version: FERRETDB_VERSION.to_string(),
        java,
        cache_dir: cache_dir.clone(),
    };

    // Fast path: markers are written last, so their presence means a finished job.
    if kafka_complete(&provisioned) && ferret_complete(&provisioned) {
        return Ok(provisioned);
    }

    fs::create_dir_all(&cache_dir)
        .with_context(|| format!("creating the provisioning cache {}", cache_dir.display()))?;
    let _lock = FileLock::acquire(&cache_dir.join("provision.lock"), LOCK_TIMEOUT)?;
    // Checked here rather than on the fast path because it forks a JVM.
    check_java_version(&provisioned.java)?;

    // Re-check under the lock: another process may have finished while we waited.
    if !kafka_complete(&provisioned) {
        provision_kafka(&kafka_dir, &kafka_version)?;
    }
    if !ferret_complete(&provisioned) {
        provision_ferretdb(&ferret_dir)?;
    }
    Ok(provisioned)
}

fn kafka_complete(p: &Provisioned) -> bool {
    let dir = p.kafka_libs.parent().unwrap_or(Path::new("."));
    dir.join(".complete").is_file()
        && p.kafka_log4j2_config.is_file()
        && p.kafka_libs
            .join(format!("kafka_2.13-{}.jar", p.kafka_version))
            .is_file()
}

fn ferret_complete(p: &Provisioned) -> bool {
    let dir = p
        .ferretdb_bin
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    dir.join(".complete").is_file() && p.ferretdb_bin.is_file()
}

/// Kafka: generate a one-dependency pom and let Maven copy the runtime closure.
fn provision_kafka(dir: &Path, version: &str) -> Result<()> {
    let started = Instant::now();
    eprintln!(
        "wiber: provisioning Apache Kafka {version} jars from Maven Central into {} \
         (first run only, ~30 s)...",
        dir.display()
    );
    require_tool(
        "mvn",
        "install Maven 3.8+ (apt-get install maven) and make sure `mvn` is on PATH",
    )?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let pom = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by wiberctl (cli/src/provision.rs): the runtime classpath of a Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>wiber.local</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <!-- Kafka logs through slf4j 1.7; this binding routes it to log4j2. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"#
    );
    fs::write(dir.join("pom.xml"), pom)
        .with_context(|| format!("writing {}", dir.join("pom.xml").display()))?;

    // Copy into a scratch directory and rename at the end, so an interrupted run never
    // leaves a half-filled libs/ that looks usable.
    let libs = dir.join("libs");
    let tmp_libs = dir.join("libs.partial");
    let _ = fs::remove_dir_all(&tmp_libs);
    let mut cmd = Command::new("mvn");
    cmd.current_dir(dir)
        .arg("-q")
        .arg("-B")
        .arg("-f")
        .arg(dir.join("pom.xml"))
        .arg("dependency:copy-dependencies")
        .arg("-DincludeScope=runtime")
        .arg(format!("-DoutputDirectory={}", tmp_libs.display()));
    run_logged(
        cmd,
        &dir.join("mvn.log"),
        MVN_TIMEOUT,
        &format!("Maven resolving org.apache.kafka:kafka_2.13:{version}"),
        "check that Maven can reach its configured repository (try \
         `mvn dependency:get -Dartifact=org.apache.kafka:kafka_2.13:VERSION`), \
         or pick another 4.x with WIBER_KAFKA_VERSION",
    )?;
    let main_jar = tmp_libs.join(format!("kafka_2.13-{version}.jar"));
    if !main_jar.is_file() {
        bail!(
            "Maven finished but {} is missing; see {}",
            main_jar.display(),
            dir.join("mvn.log").display()
        );
    }
    let _ = fs::remove_dir_all(&libs);
    fs::rename(&tmp_libs, &libs)
        .with_context(|| format!("moving {} to {}", tmp_libs.display(), libs.display()))?;

    fs::write(dir.join("log4j2.properties"), KAFKA_LOG4J2)
        .with_context(|| format!("writing {}", dir.join("log4j2.properties").display()))?;
    write_marker(dir, version)?;
    eprintln!(
        "wiber: Kafka {version} ready ({} jars) in {:.1?}",
        fs::read_dir(&libs).map(|d| d.count()).unwrap_or(0),
        started.elapsed()
    );
    Ok(())
}

/// Broker logging: console only (the runtime redirects stdout to the instance's log file),
/// INFO for the broker's own lifecycle, WARN for the chatty rest.
const KAFKA_LOG4J2: &str = "\
# Generated by wiberctl (cli/src/provision.rs). The broker's stdout goes to its log file.
status = warn
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.controller.name = org.apache.kafka.controller
logger.controller.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.log.name = kafka.log
logger.log.level = WARN
";

/// FerretDB: build from a copy of the module source.
///
/// Why not `go install …@v1.24.2`: it builds fine, but the module zip lacks the generated
/// `build/version/version.txt`, and the binary then panics at start-up ("Invalid
/// build/version/version.txt file content"). So we download the module, copy it, write
/// that file and `go build` the copy.
fn provision_ferretdb(dir: &Path) -> Result<()> {
    let started = Instant::now();
    eprintln!(
        "wiber: building FerretDB {FERRETDB_VERSION} from the Go module proxy into {} \
         (first run only, ~5 min on 2 cores)...",
        dir.display()
    );
    require_tool(
        "go",
        "install Go 1.24 or newer and make sure `go` is on PATH (FerretDB v1.24 needs it)",
    )?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = dir.join("go.log");

    // 1. Download the module and learn where the module cache put it.
    let out = Command::new("go")
        .args(["mod", "download", "-json"])
        .arg(format!("{FERRETDB_MODULE}@{FERRETDB_VERSION}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running `go mod download`")?;
    if !out.status.success() {
        bail!(
            "`go mod download {FERRETDB_MODULE}@{FERRETDB_VERSION}` failed ({}); check that \
             `go` can reach its module proxy (GOPROXY).\n{}{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stdout), 20),
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .context("parsing the JSON printed by `go mod download -json`")?;
    if let Some(err) = info.get("Error").and_then(|e| e.as_str()) {
        bail!("`go mod download {FERRETDB_MODULE}@{FERRETDB_VERSION}` failed: {err}");
    }
    let module_dir = info
        .get("Dir")
        .and_then(|d| d.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("`go mod download -json` printed no \"Dir\": {info}"))?;

    // 2. Writable copy (the module cache is read-only) with the version file.
    let src = dir.join("src");
    let _ = make_writable_and_remove(&src);
    let status = Command::new("cp")
        .arg("-R")
        .arg(&module_dir)
        .arg(&src)
        .status()
        .context("running cp")?;
    if !status.success() {
        bail!(
            "copying {} to {} failed",
            module_dir.display(),
            src.display()
        );
    }
    let status = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&src)
        .status()
        .context("running chmod")?;
    if !status.success() {
        bail!("making {} writable failed", src.display());
    }
    fs::write(
        src.join("build/version/version.txt"),
        format!("{FERRETDB_VERSION}\n"),
    )
    .context("writing FerretDB's build/version/version.txt")?;

    // 3. Build a static binary. -buildvcs=false: the copy lives inside our git work tree,
    // and Go would otherwise try to stamp *our* repository's commit into it.
    let bin_dir = dir.join("bin");
    fs::create_dir_all(&bin_dir)?;
    let tmp_bin = bin_dir.join("ferretdb.partial");
    let mut cmd = Command::new("go");
    cmd.current_dir(&src)
        .env("CGO_ENABLED", "0")
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&tmp_bin)
        .arg("./cmd/ferretdb");
    run_logged(
        cmd,
        &log,
        GO_TIMEOUT,
        &format!("building FerretDB {FERRETDB_VERSION}"),
        "check that Go is 1.24+ (`go version`) and can reach its module proxy",
    )?;

    // 4. Check it runs before declaring success.
    let out = Command::new(&tmp_bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --version", tmp_bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains(FERRETDB_VERSION) {
        bail!(
            "the freshly built FerretDB does not run (`--version` exited {}):\n{}{}",
            out.status,
            tail(&stdout, 20),
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    let bin = bin_dir.join("ferretdb");
    fs::rename(&tmp_bin, &bin)
        .with_context(|| format!("moving {} to {}", tmp_bin.display(), bin.display()))?;
    // The source copy is only needed for the build; the Go caches keep what a rebuild needs.
    let _ = make_writable_and_remove(&src);
    write_marker(dir, FERRETDB_VERSION)?;
    eprintln!(
        "wiber: FerretDB {FERRETDB_VERSION} ready in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

fn make_writable_and_remove(path: &Path) -> Result<()> {
    if path.exists() {
        let _ = Command::new("chmod").args(["-R", "u+w"]).arg(path).status();
        fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

fn write_marker(dir: &Path, version: &str) -> Result<()> {
    let marker = dir.join(".complete");
    fs::write(
        &marker,
        format!(
            "{version} provisioned at {}\n",
            chrono::Utc::now().to_rfc3339()
        ),
    )
    .with_context(|| format!("writing {}", marker.display()))
}

/// Finds a Java 17+ runtime: `$JAVA_HOME/bin/java`, else `java` on PATH.
fn find_java() -> Result<PathBuf> {
    let java = std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin").join("java"))
        .filter(|p| p.is_file())
        .or_else(|| which("java"))
        .ok_or_else(|| {
            anyhow!(
                "java not found (neither $JAVA_HOME/bin/java nor on PATH): Kafka 4 needs \
                 Java 17+, install it with `apt-get install openjdk-17-jre-headless`"
            )
        })?;
    Ok(java)
}

/// Checks the Java major version (Kafka 4 brokers refuse to start below 17). Separate
/// from [`find_java`] because it forks a JVM (~100 ms) and the warm path should not.
pub fn check_java_version(java: &Path) -> Result<u32> {
    let out = Command::new(java)
        .arg("-version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} -version", java.display()))?;
    // `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15` on stderr.
    let text = String::from_utf8_lossy(&out.stderr);
    let major = text
        .split('"')
        .nth(1)
        .and_then(|v| v.split(['.', '-', '+']).next())
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| {
            anyhow!(
                "cannot read the version from `{} -version`: {text}",
                java.display()
            )
        })?;
    if major < 17 {
        bail!(
            "{} is Java {major}; Kafka 4 needs Java 17+: install openjdk-17-jre-headless \
             or point JAVA_HOME at a newer JDK",
            java.display()
        );
    }
    Ok(major)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn require_tool(name: &str, fix: &str) -> Result<()> {
    if which(name).is_none() {
        bail!("{name} not found on PATH: {fix}");
    }
    Ok(())
}

/// Runs `cmd` with stdout+stderr appended to `log`, bounded by `timeout`. On failure the
/// error names `what`, suggests `fix` and quotes the log's last lines. Also the local
/// runtime's way to run `initdb`.
pub(crate) fn run_logged(
    mut cmd: Command,
    log: &Path,
    timeout: Duration,
    what: &str,
    fix: &str,
) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(
        file,
        "=== {} {what}: {:?}",
        chrono::Utc::now().to_rfc3339(),
        cmd
    )?;
    let start_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what}: timed out after {timeout:?}; {fix}. Last output ({}):\n{}",
                log.display(),
                tail(&read_from(log, start_len), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        bail!(
            "{what} failed ({status}); {fix}. Last output ({}):\n{}",
            log.display(),
            tail(&read_from(log, start_len), 30)
        );
    }
    Ok(())
}

fn read_from(path: &Path, offset: u64) -> String {
    use std::io::Seek;
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.seek(std::io::SeekFrom::Start(offset));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        s = String::from_utf8_lossy(&buf).into_owned();
    }
    s
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    let mut out = lines[from..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// An exclusive `flock(2)`, released when dropped (or when the process dies, which is the
/// point of using flock rather than a lock *file*: no stale locks after a crash).
struct FileLock {
    file: fs::File,
}

impl FileLock {
    fn acquire(path: &Path, timeout: Duration) -> Result<FileLock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        let deadline = Instant::now() + timeout;
        let mut told = false;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(FileLock { file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
            if Instant::now() >= deadline {
                bail!(
                    "waited {timeout:?} for {} (another process is provisioning); if none is, \
                     delete the file and retry",
                    path.display()
                );
            }
            if !told {
                eprintln!("wiber: another process is provisioning; waiting for it to finish...");
                told = true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the fd would release it too, this just makes it explicit.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}
