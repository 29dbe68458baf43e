//! The scenario suite in `scenarios/`, run as CI runs it: the real `wiberctl` binary runs
//! each file (`scenario run`) against a Docker stack on the offline images (unique
//! project, free ports). Scenarios that leave the stack as they found it share one stack
//! per shape (one broker; a three-broker cluster) and attach to it; the others get their
//! own, which the run brings up and takes down. The test takes every stack down again on
//! any failure. Reports go to `reports/ci-scenarios/` (kept by `.ci/run`), with one JUnit
//! file per scenario.
//!
//! Docker rather than local processes: most of the faults (network disconnect, loss,
//! partitions and delay inside a container's namespace, pause of a container, a broker
//! restart with its volume) are what the suite is about, and they exist only there. bench-5000 is a performance run, not part of CI.
//!
//! Needs what `docker_stack.rs` needs: a Docker engine and `target/debug/wiber-server`.
//! One scenario at a time (2 cores).
//!
//! Run: `cargo build -p wiber-server && cargo test -p wiberctl --test scenarios -- --nocapture`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;
use support::*;

const WIBERCTL: &str = env!("CARGO_BIN_EXE_wiberctl");

/// One scenario at a time; builds the offline images once per test binary.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static IMAGES: OnceLock<()> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    IMAGES.get_or_init(ensure_offline_images);
    guard
}

/// Takes the project's stack down on drop, also when the test panics.
struct Project(String);

impl Drop for Project {
    fn drop(&mut self) {
        let out = Command::new(WIBERCTL)
            .args([
                "stack",
                "down",
                "--volumes",
                "--runtime",
                "docker",
                "--project",
                &self.0,
            ])
            .env("WIBER_ROOT", repo_root())
            .output();
        if let Ok(o) = out {
            if !o.status.success() {
                eprintln!("stack down {} failed: {}", self.0, describe(&o));
            }
        }
    }
}

/// Runs `scenarios/<name>.toml` on a fresh stack, which the run brings up (its
/// `[stack]`) and takes down, and expects exit 0.
fn run_scenario(name: &str) {
    let _one = exclusive();
    let root = repo_root();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let project = Project(format!("sc{}", &id[..8]));
    let t = Instant::now();
    let out = scenario_command(&root, name, &project.0)
        .args(["--images", "offline"])
        .args(["--api-port", &free_port().to_string()])
        .args(["--mongo-port", &free_port().to_string()])
        .args(["--kafka-port", &free_port().to_string()])
        .args(["--postgres-port", &free_port().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run wiberctl: {e}"));
    eprintln!(
        "[scenario] {name}: exit {:?} in {:.1?}\n{}",
        out.status.code(),
        t.elapsed(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "scenario {name} did not pass: {}",
        describe(&out)
    );
}

/// The scenarios of a one-broker stack with two consumers (`stack up --consumers 2`).
const ONE_BROKER: [&str; 12] = [
    "smoke",
    "kill-consumer",
    "kill-api",
    "restart-broker",
    "restart-mongo",
    "pause-consumer",
    "partition-consumer",
    "pause-broker",
    "lossy-store-link",
    "store-outage-kill-consumer",
    "poison-record",
    // Last: scaling has no undo, it leaves the stack with four consumers.
    "scale-consumers",
];

/// The cluster scenarios of a safe three-broker stack (`stack up --brokers 3`).
const CLUSTER: [&str; 5] = [
    "kill-partition-leader",
    "isolate-leader",
    "slow-broker",
    "rolling-broker-restart",
    // Last: three minutes of random faults on every service, verified as it goes.
    "soak-ci",
];

/// The one-broker scenarios on one stack brought up once (see [`run_group`]).
#[test]
fn one_broker_scenarios() {
    run_group("ob", &["--consumers", "2"], &ONE_BROKER);
}

/// The cluster scenarios on one three-broker stack (see [`run_group`]).
#[test]
fn cluster_scenarios() {
    run_group("cl", &["--brokers", "3", "--consumers", "2"], &CLUSTER);
}

/// A scenario runs only on the shape its `[stack]` states, `--attach` included: every
/// file CI runs on a shared stack states that stack's shape, and a one-broker stack
/// under a three-broker file is refused with both shapes and the fix. Pure: the shapes
/// are those `stack up` makes, no stack is needed.
#[test]
fn shared_stacks_are_of_the_shape_their_scenarios_state() {
    use wiberctl::runtime::{Cluster, Profile, RunningShape};
    use wiberctl::scenario::shape::{check, Meeting};
    let shape_of = |c: Cluster| RunningShape {
        brokers: c.brokers,
        topic: "wiber.messages".into(),
        replication: Some(c.replication()),
        replication_unknown: None,
        min_insync: Some(c.min_insync()),
        unclean_election: Some(c.profile == Profile::Unsafe),
    };
    let one = shape_of(Cluster::default());
    let three = shape_of(Cluster {
        brokers: 3,
        profile: Profile::Safe,
    });
    let file = |name: &str| repo_root().join("scenarios").join(format!("{name}.toml"));
    for (names, running) in [(&ONE_BROKER[..], &one), (&CLUSTER[..], &three)] {
        for name in names {
            let f = file(name);
            let sc = wiberctl::scenario::format::load(&f).unwrap();
            let stated = sc.stack.expect("CI's scenarios state their stack").cluster;
            if let Err(e) = check(
                &f.display().to_string(),
                "ci",
                &stated,
                running,
                Meeting::Attached,
            ) {
                panic!("{name} would be refused on its shared stack: {e}");
            }
        }
    }
    let f = file("kill-partition-leader");
    let stated = wiberctl::scenario::format::load(&f)
        .unwrap()
        .stack
        .unwrap()
        .cluster;
    let e = check(
        "kill-partition-leader.toml",
        "wiber",
        &stated,
        &one,
        Meeting::Existing,
    )
    .unwrap_err();
    assert!(
        e.contains("it has 1 broker, topic wiber.messages at replication factor 1"),
        "{e}"
    );
    assert!(
        e.contains("the file states 3 brokers, replication factor 3"),
        "{e}"
    );
    assert!(
        e.contains("`wiberctl stack down --volumes --project wiber`"),
        "{e}"
    );
    assert!(e.contains("--fresh"), "{e}");
    // Grown halfway: three broker instances, the topic still at replication factor 1.
    let grown = RunningShape {
        replication: Some(1),
        ..three.clone()
    };
    assert!(check("k.toml", "wiber", &stated, &grown, Meeting::Existing).is_err());
}

/// What `scenario run` refuses before touching any stack: `--fresh` with `--attach`,
/// `--fresh` for a file without `[stack]` (no shape to bring up); and `scenario validate`
/// knows `consumer.stalled_max`, in seconds.
#[test]
fn fresh_needs_a_shape_and_stalled_max_validates() {
    let root = repo_root();
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fresh-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let bare = dir.join("bare.toml");
    std::fs::write(
        &bare,
        "name = \"bare\"\n[load]\nrate = 10\nduration = \"5s\"\n[thresholds]\n\"consumer.stalled_max\" = \"< 30\"\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        Command::new(WIBERCTL)
            .args([
                "scenario",
                "run",
                "--runtime",
                "local",
                "--project",
                "nosuchstack",
            ])
            .args(extra)
            .arg("--reports-dir")
            .arg(&dir)
            .arg(&bare)
            .env("WIBER_ROOT", &root)
            .output()
            .unwrap()
    };
    let out = run(&["--fresh", "--attach"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--attach"),
        "{}",
        describe(&out)
    );
    let out = run(&["--fresh"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--fresh brings a stack up in the shape of the file's [stack]"),
        "{}",
        describe(&out)
    );
    let out = Command::new(WIBERCTL)
        .args(["scenario", "validate"])
        .arg(&bare)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    std::fs::write(
        &bare,
        "name = \"bare\"\n[load]\nrate = 10\nduration = \"5s\"\n[thresholds]\n\"consumer.stalled\" = \"< 30\"\n",
    )
    .unwrap();
    let out = Command::new(WIBERCTL)
        .args(["scenario", "validate"])
        .arg(&bare)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("consumer.stalled_max"),
        "{}",
        describe(&out)
    );
}

/// Runs scenarios one after another on one stack brought up once with `up` (a stack takes
/// 20-25 s to come up and ~10 s to go; CI has two cores and half an hour). Each attaches
/// to it and starts from the steady state, which the runner checks (every instance running
/// and healthy, lag 0), and leaves it whole: its rollbacks undo every fault. So each finds
/// what a fresh stack would give it, and a scenario that broke the stack fails the next
/// one's steady-state check rather than passing on a broken stack. Every scenario runs
/// even when one fails; the test fails naming each that did.
fn run_group(tag: &str, up: &[&str], names: &[&str]) {
    let _one = exclusive();
    let root = repo_root();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let project = Project(format!("{tag}{}", &id[..8]));
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let t = Instant::now();
    let out = Command::new(WIBERCTL)
        .args(["stack", "up"])
        .args(up)
        .args([
            "--project",
            &project.0,
            "--runtime",
            "docker",
            "--images",
            "offline",
        ])
        .args(["--api-port", &ports[0].to_string()])
        .args(["--mongo-port", &ports[1].to_string()])
        .args(["--kafka-port", &ports[2].to_string()])
        .args(["--postgres-port", &ports[3].to_string()])
        .env("WIBER_ROOT", &root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stack up: {}", describe(&out));
    eprintln!("[group {tag}] stack up {up:?} in {:.1?}", t.elapsed());
    let mut failed = Vec::new();
    for name in names {
        let t = Instant::now();
        let out = scenario_command(&root, name, &project.0)
            .arg("--attach")
            .output()
            .unwrap();
        eprintln!(
            "[scenario] {name}: exit {:?} in {:.1?}\n{}",
            out.status.code(),
            t.elapsed(),
            String::from_utf8_lossy(&out.stdout)
        );
        if out.status.code() != Some(0) {
            failed.push(format!("{name}: {}", describe(&out)));
        }
    }
    assert!(
        failed.is_empty(),
        "scenarios failed on the shared stack:\n{}",
        failed.join("\n")
    );
}

/// The unsafe profile (acks=1, min.insync.replicas=1, unclean election) under a leader cut
/// off from the other brokers: the scenario expects `lost` to fail, so it passes only
/// when verify catches the acknowledged messages the cluster dropped.
#[test]
fn isolate_leader_unsafe() {
    run_scenario("isolate-leader-unsafe");
}

/// `wiberctl scenario run` of `scenarios/<name>.toml` against the project's stack, with
/// the suite's reports directory and a JUnit file of its own.
fn scenario_command(root: &Path, name: &str, project: &str) -> Command {
    let reports = root.join("reports").join("ci-scenarios");
    let mut cmd = Command::new(WIBERCTL);
    cmd.args(["scenario", "run"])
        .arg(root.join("scenarios").join(format!("{name}.toml")))
        .args(["--project", project, "--runtime", "docker"])
        .arg("--reports-dir")
        .arg(&reports)
        .arg("--junit")
        .arg(reports.join(format!("junit-{name}.xml")))
        .env("WIBER_ROOT", root);
    cmd
}

/// Every file of the suite is valid, and a broken one is refused with file:line, the
/// expected syntax and exit 2 (no stack needed).
#[test]
fn the_suite_validates_and_bad_files_are_located() {
    let root = repo_root();
    let files: Vec<PathBuf> = std::fs::read_dir(root.join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    assert!(files.len() >= 9, "{files:?}");
    let out = Command::new(WIBERCTL)
        .args(["scenario", "validate"])
        .args(&files)
        .args(matrix_files())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("scenario-bad-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "name = \"bad\"\n[load]\nrate = 10\nduration = \"5s\"\n[[faults]]\nat = \"1s\"\naction = \"kill\"\ntarget = \"consumer#1\"\nfor = \"soon\"\n").unwrap();
    let out = Command::new(WIBERCTL)
        .args(["scenario", "validate"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:9:"), "{err}");
    assert!(err.contains("expected: [[faults]]"), "{err}");

    // A scenario without [stack] and no running stack: exit 2 with a hint, nothing run.
    let attach = dir.join("attach.toml");
    std::fs::write(
        &attach,
        "name = \"attach\"\n[load]\nrate = 10\nduration = \"5s\"\n",
    )
    .unwrap();
    let out = Command::new(WIBERCTL)
        .args([
            "scenario",
            "run",
            "--runtime",
            "local",
            "--project",
            "nosuchstack",
            "--reports-dir",
        ])
        .arg(&dir)
        .arg(&attach)
        .env("WIBER_ROOT", &root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stack up"),
        "{}",
        describe(&out)
    );
    let junit = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .map(|d| std::fs::read_to_string(d.join("junit.xml")).unwrap())
        .expect("the run directory with junit.xml");
    assert!(junit.contains("<error"), "{junit}");
}

fn matrix_files() -> Vec<PathBuf> {
    std::fs::read_dir(repo_root().join("scenarios").join("matrix"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect()
}

/// No scenario we ship can pass a stack that refused every message: its thresholds are
/// evaluated on the figures of a run where every POST got a fast 503 (nothing stored,
/// so every invariant holds) and at least one must fail. The kill matrix shows the same
/// with a real server (`refuse-all`); this covers every file, without a stack.
#[test]
fn no_shipped_scenario_passes_a_stack_that_refuses_everything() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.extend(matrix_files());
    // The check can fail: a file that bounds only the invariants passes such a stack.
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("refuse-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let weak = dir.join("weak.toml");
    std::fs::write(&weak, "name = \"weak\"\n[load]\nrate = 10\nduration = \"5s\"\n[thresholds]\nlost = \"== 0\"\nduplicated = \"== 0\"\n").unwrap();
    assert!(refused_stack_failures(&weak).is_empty());
    for f in files {
        assert!(
            !refused_stack_failures(&f).is_empty(),
            "{} would pass a stack that refused every message: bound goodput (achieved_rate, during.ok_rate, after.ok_rate)",
            f.display()
        );
    }
}

/// The thresholds of scenario `f` that fail on the figures of a stack that answered
/// every POST with a fast 503.
fn refused_stack_failures(f: &Path) -> Vec<String> {
    use wiberctl::scenario::threshold::{evaluate, Metrics, Verdict};
    {
        let sc = wiberctl::scenario::format::load(f).unwrap();
        let rate = sc.load.mean_rate();
        let n = rate * sc.load.duration().as_secs_f64();
        // Answered at once, never ok: no ack or service latency exists (ok answers only).
        let mut m = Metrics::new();
        for (k, v) in [
            ("sent", n),
            ("unknown", n),
            ("errors.http_503", n),
            ("answered_rate", rate),
            ("achieved_rate", 0.0),
            ("error_ack.p99", 1.0),
        ] {
            m.insert(k.into(), v);
        }
        for k in [
            "ok",
            "failed",
            "lost",
            "duplicated",
            "unexpected",
            "corrupted",
            "reordered",
            "recovered",
            "stored",
            "not_started",
            "retried",
        ] {
            m.insert(k.into(), 0.0);
        }
        m.insert("indeterminate".into(), n);
        for p in ["before", "during", "after"] {
            for (k, v) in [
                ("ok", 0.0),
                ("failed", 0.0),
                ("unknown", n / 3.0),
                ("sent", n / 3.0),
                ("errors", n / 3.0),
                ("ok_rate", 0.0),
                ("answered_rate", rate),
            ] {
                m.insert(format!("{p}.{k}"), v);
            }
        }
        sc.thresholds
            .iter()
            .map(|t| evaluate(t, &m, rate, None))
            .filter(|e| e.verdict == Verdict::Fail)
            .map(|e| e.metric)
            .collect()
    }
}
