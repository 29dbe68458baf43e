//! The binary's start-up checks of `WIBER_SEEDED_BUG`: a harness must never believe a
//! bug is active when it is not, so a value the build cannot honour stops the process
//! before it connects to anything.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `wiber-server <service>` with `vars` (and dependencies pointed at closed ports,
/// so a check that failed to stop it cannot reach a real stack); kills it if it is still
/// running after 10 s.
fn run(service: &str, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wiber-server"));
    cmd.arg(service)
        .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .env("MONGO_URI", "mongodb://127.0.0.1:1")
        .env("API_HOST", "127.0.0.1")
        .env("API_PORT", "0")
        .env_remove("WIBER_SEEDED_BUG")
        .env_remove("WIBER_SEEDED_BUG_EVERY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("wiber-server starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "wiber-server {service} with {vars:?} kept running; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[cfg(not(feature = "seeded-bugs"))]
#[test]
fn a_build_without_seeded_bugs_refuses_to_start_with_one_set() {
    for service in ["api", "consumer"] {
        let out = run(service, &[("WIBER_SEEDED_BUG", "corrupt")]);
        assert_eq!(out.status.code(), Some(1), "{service}: {}", stderr(&out));
        assert!(
            stderr(&out)
                .contains("WIBER_SEEDED_BUG=corrupt needs a build with --features seeded-bugs"),
            "{service}: {}",
            stderr(&out)
        );
    }
}

#[cfg(feature = "seeded-bugs")]
#[test]
fn an_unknown_seeded_bug_or_period_is_a_start_error() {
    use wiber_model::contract::SeededBug;
    for service in ["api", "consumer"] {
        let out = run(service, &[("WIBER_SEEDED_BUG", "lose-everything")]);
        assert_eq!(out.status.code(), Some(1), "{service}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("unknown seeded bug \"lose-everything\""),
            "{err}"
        );
        for b in SeededBug::ALL {
            assert!(err.contains(b.name()), "{b} not listed: {err}");
        }
        let out = run(
            service,
            &[
                ("WIBER_SEEDED_BUG", "corrupt"),
                ("WIBER_SEEDED_BUG_EVERY", "0"),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{service}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("WIBER_SEEDED_BUG_EVERY=\"0\""),
            "{}",
            stderr(&out)
        );
    }
}

/// A seeded build says, once, at start, which bug it runs with.
#[cfg(feature = "seeded-bugs")]
#[test]
fn a_seeded_build_warns_at_start_naming_the_bug() {
    use std::io::{BufRead, BufReader};

    let mut child = Command::new(env!("CARGO_BIN_EXE_wiber-server"))
        .arg("consumer")
        .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .env("MONGO_URI", "mongodb://127.0.0.1:1")
        .env("WIBER_SEEDED_BUG", "skip-on-store-error")
        .env("WIBER_SEEDED_BUG_EVERY", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The consumer then waits for its (unreachable) store, so read its first line and stop it.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(10));
    child.kill().unwrap();
    child.wait().unwrap();
    let line = line.expect("a log line within 10 s");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "WARN", "{line}");
    assert_eq!(v["seeded_bug"], "skip-on-store-error", "{line}");
    assert_eq!(v["every"], 3, "{line}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("SEEDED BUG ACTIVE"),
        "{line}"
    );
}
