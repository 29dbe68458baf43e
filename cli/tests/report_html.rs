//! The HTML reports as a browser sees them: the real `wiberctl` binary runs a short
//! scenario (12 s of load at 100/s, one consumer paused for 3 s) on a local stack it
//! brings up and takes down (`--runtime local`, free ports on 127.0.0.1), and headless
//! Chromium loads the scenario's `report.html` and its load segment's bench page. The
//! checks read the DOM Chromium built (`--dump-dom`), not the bytes we wrote: every chart
//! is an `<svg>` with its id, the verdict, the pass and fail rows of the thresholds, the
//! fault window on every time chart, no script anywhere (the scenario's description
//! carries one, which must arrive as text), and no error on the console.
//!
//! One threshold is impossible on purpose (`achieved_rate >= 2 * rate`), so the run's
//! verdict is FAIL (exit 1) and the page has a failing row as well as passing ones.
//!
//! Chromium comes from Debian's `chromium` package, installed with apt-get when missing
//! (as root; otherwise the test says what to install).
//!
//! Run: `cargo build --workspace && cargo test -p wiberctl --test report_html -- --nocapture`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use support::*;

const WIBERCTL: &str = env!("CARGO_BIN_EXE_wiberctl");
/// Bound on one Chromium run (it usually takes a second or two).
const CHROMIUM_TIMEOUT: &str = "120";

/// A description with markup: it must reach the page as text.
const DESCRIPTION: &str = "12 s at 100/s, consumer#1 paused for 3 s <script>alert('x')</script>";

/// The DOM Chromium built from `page`, and what it logged (console messages included).
fn dump_dom(page: &Path) -> (String, String) {
    let out = Command::new("timeout")
        .arg(CHROMIUM_TIMEOUT)
        .arg(ensure_debian_package("chromium", "chromium"))
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed on {}: {}",
        page.display(),
        describe(&out)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The tag name of the element with `id` in serialized HTML, if there is one.
fn tag_with_id<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!(" id=\"{id}\""))?;
    let open = dom[..at].rfind('<')?;
    dom[open + 1..at].split_whitespace().next()
}

/// No script ran or failed: none in the DOM, nothing uncaught, no console message.
fn assert_no_script(dom: &str, log: &str, page: &str) {
    assert!(
        !dom.contains("<script"),
        "{page} has a script element:\n{dom}"
    );
    assert!(!log.contains("Uncaught"), "{page}: script error:\n{log}");
    assert!(!log.contains(":CONSOLE("), "{page}: console output:\n{log}");
}

fn scenario_file(dir: &Path) -> PathBuf {
    let f = dir.join("html-report.toml");
    let toml = format!(
        r#"name = "html-report"
description = "{DESCRIPTION}"

[stack]
consumers = 2

[load]
rate = 100
duration = "12s"
conversations = 10

[[faults]]
at = "4s"
action = "pause"
target = "consumer#1"
for = "3s"

[thresholds]
lost = "== 0"
duplicated = "== 0"
"ack.p99" = "< 2s"
# Impossible on purpose: the page must show a failing row and the FAIL verdict.
achieved_rate = ">= 2 * rate"
"#
    );
    std::fs::write(&f, toml).unwrap();
    f
}

#[test]
fn scenario_and_bench_pages_in_chromium() {
    let root = repo_root();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("report-html-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work).unwrap();
    let file = scenario_file(&work);
    let reports = work.join("reports");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let project = LocalProject(format!("html{}", &id[..8]));
    let (a, m, k) = (free_port(), free_port(), free_port());
    // Chromium first: installing it must not be what times a scenario out.
    ensure_debian_package("chromium", "chromium");

    let t = Instant::now();
    let out = Command::new("timeout")
        .args(["600", WIBERCTL, "scenario", "run"])
        .arg(&file)
        .args(["--runtime", "local", "--project", &project.0])
        .args(["--api-port", &a.to_string(), "--mongo-port", &m.to_string()])
        .args(["--kafka-port", &k.to_string(), "--drain-timeout", "60s"])
        .args(["--postgres-port", &free_port().to_string()])
        .arg("--reports-dir")
        .arg(&reports)
        .env("WIBER_ROOT", &root)
        .output()
        .expect("run wiberctl scenario run");
    eprintln!(
        "[report_html] scenario run: exit {:?} in {:.1?}",
        out.status.code(),
        t.elapsed()
    );
    // 1 = a verdict of fail (the impossible threshold); 2 would be "could not be done".
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let run_dir = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("the run directory");
    let page = run_dir.join("report.html");
    let written = std::fs::read_to_string(&page).expect("report.html written");
    assert!(written.starts_with("<!DOCTYPE html>"), "{written}");

    let (dom, log) = dump_dom(&page);
    assert_no_script(&dom, &log, "report.html");
    for id in [
        "chart-rate",
        "chart-ack",
        "chart-e2e",
        "chart-lag",
        "chart-cpu",
    ] {
        assert_eq!(
            tag_with_id(&dom, id),
            Some("svg"),
            "no <svg id={id}>:\n{dom}"
        );
    }
    // The verdict, big: the banner says FAIL and is coloured as a failure.
    let banner = &dom[dom.find("id=\"verdict\"").expect("the verdict banner")..];
    let banner = &banner[..banner.find("</header>").unwrap()];
    assert!(banner.contains(">FAIL<"), "{banner}");
    assert!(dom.contains("class=\"banner fail\""), "{dom}");
    // The description's script arrived as text.
    assert!(
        dom.contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
        "{dom}"
    );
    // Threshold rows, with their verdicts.
    for (metric, verdict) in [
        ("lost", "pass"),
        ("duplicated", "pass"),
        ("ack.p99", "pass"),
        ("achieved_rate", "fail"),
    ] {
        assert!(
            dom.contains(&format!("<tr class=\"{verdict}\"><td>{metric}</td>")),
            "no {verdict} row for {metric}:\n{dom}"
        );
    }
    assert!(
        dom.contains("<tr class=\"pass\"><td>invariants (verify)</td>"),
        "the invariants hold on a paused consumer:\n{dom}"
    );
    // The pause window is shaded and labelled on each of the six time charts (rate, ack,
    // end-to-end, lag, CPU, RSS).
    assert_eq!(dom.matches("class=\"fault-window\"").count(), 6, "{dom}");
    assert_eq!(
        dom.matches("class=\"fault-label\"").count(),
        6,
        "one label per chart:\n{dom}"
    );
    assert_eq!(dom.matches(">pause consumer#1</text>").count(), 6, "{dom}");
    // Memory per service is charted and its growth tabled.
    assert!(dom.contains("id=\"chart-rss\""), "{dom}");
    assert!(dom.contains("<h2 id=\"resources\">Resources</h2>"), "{dom}");
    // Phases side by side, a recovery row, verify's counts.
    for phase in ["before (", "during (", "after ("] {
        assert!(
            dom.contains(&format!("<th class=\"num\">{phase}")),
            "{phase}:\n{dom}"
        );
    }
    assert!(dom.contains("<table class=\"faults\">"), "{dom}");
    assert!(dom.contains("<table class=\"verify\">"), "{dom}");
    // The load segment's own page, linked relatively, and there.
    assert!(dom.contains("<a href=\"load/report.html\">"), "{dom}");
    let bench = run_dir.join("load").join("report.html");
    assert!(bench.is_file(), "{} missing", bench.display());

    // The bench page: its details are tables now, and its legends sit above the plots.
    let (dom, log) = dump_dom(&bench);
    assert_no_script(&dom, &log, "load/report.html");
    assert!(
        !dom.contains("<pre"),
        "details must be tables, not preformatted text:\n{dom}"
    );
    let details = &dom[dom.find("<h2>Details</h2>").expect("a Details section")..];
    for class in ["summary", "latency", "verify", "resources", "events"] {
        assert!(
            details.contains(&format!("<table class=\"{class}\">")),
            "no {class} table in Details:\n{details}"
        );
    }
    // Where the cores went: every service of the stack and the generator, sampled from
    // /proc during the load (a service that used no CPU at all would be a broken sampler).
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("load").join("report.json")).unwrap(),
    )
    .unwrap();
    let resources = &details[details.find("<table class=\"resources\">").unwrap()..];
    let resources = &resources[..resources.find("</table>").unwrap()];
    for service in ["kafka", "mongo", "api", "consumer", "generator"] {
        let sampled = report["resources"]["services"]
            .as_array()
            .expect("report.json has resources")
            .iter()
            .find(|s| s["service"] == service)
            .unwrap_or_else(|| panic!("{service} not sampled: {}", report["resources"]));
        let cores = sampled["mean_cores"].as_f64().unwrap_or(0.0);
        assert!(cores > 0.0, "{service} used no CPU under load: {sampled}");
        assert!(
            sampled["peak_rss_bytes"].as_u64().unwrap_or(0) > 0,
            "{sampled}"
        );
        assert!(
            resources.contains(&format!("<tr><td>{service}</td>")),
            "no {service} row in the resources table:\n{resources}"
        );
    }
    for id in [
        "chart-rate",
        "chart-latency",
        "chart-cpu",
        "chart-rss",
        "chart-distribution",
    ] {
        assert_eq!(
            tag_with_id(&dom, id),
            Some("svg"),
            "no <svg id={id}>:\n{dom}"
        );
        let svg = dom.find(&format!(" id=\"{id}\"")).unwrap();
        let figure = dom[..svg].rfind("<figure").unwrap();
        let legend = dom[figure..svg].find("class=\"legend\"");
        assert!(
            legend.is_some(),
            "{id}: the legend is not above the plot:\n{dom}"
        );
    }
    std::fs::remove_dir_all(&work).unwrap();
}
