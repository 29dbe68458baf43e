//! `wiberctl scenario run|validate|list`: flags → [`crate::scenario`], then the tables.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::args::{StackArgs, UpFlags};
use crate::exit::{self, Exit};
use crate::output;
use crate::scenario::{self, outcome::RunVerdict};
use crate::units::parse_duration;

#[derive(Debug, Subcommand)]
pub enum ScenarioCmd {
    /// Run scenario files: stack up (or attach), load + faults, verify, thresholds, reports.
    #[command(
        after_help = "Each run writes reports/<UTC time>-scenario-<name>/: scenario.toml (the file as run), \
scenario.json, summary.md, junit.xml, events.jsonl, lag.jsonl, and load/ (the bench run: ledger, report.json/md/html).\n\n\
A file with [stack] brings the stack up when it is not running and takes it down afterwards (unless --keep-stack); \
without [stack] (or with --attach) it runs against the running stack. Every fault is undone at the end, also on \
failure or Ctrl-C.\n\n\
A scenario runs only on the shape its [stack] states (brokers, the topic's replication factor, min.insync.replicas, \
profile): a stack of the project in another shape, running or stopped, is refused before any load, with both shapes \
and the fix: `wiberctl stack down --volumes` then run again, or run again with --fresh (takes it down with its volumes \
and brings it up as the file states). Consumers are not shape: a warm stack gets the ones the file asks for.\n\n\
A file with [random] draws its faults from a weighted menu with a seed: --seed N, else the file's `seed`, else a fresh \
one. The seed is printed at the start and in the summary with the command that replays the run (the same file and seed \
draw the same faults, fault for fault); scenario.json keeps it as `seed`. Preview a draw with \
`wiberctl scenario validate FILE --seed N --schedule`.\n\n\
Exit codes: 0 every scenario passed; 1 a threshold or invariant failed; 2 a scenario could not be run \
(bad file, no stack, broken steady state, a fault step or rollback failed, interrupted).\n\n\
Examples:\n  wiberctl scenario run scenarios/smoke.toml\n  wiberctl scenario run scenarios/*.toml --junit reports/junit.xml\n  \
wiberctl scenario run scenarios/kill-api.toml --attach\n  wiberctl scenario run scenarios/bench-5000.toml --baseline reports/<run>/\n  \
wiberctl scenario run soak.toml --seed 7        # replay the random faults of a run that printed seed 7"
    )]
    Run(Box<RunArgs>),
    /// Check scenario files without running them (errors give file:line and the expected syntax).
    #[command(
        after_help = "A file with [random] also draws its faults, as `scenario run` would with the same seed, and \
prints the seed and the count of each action; --schedule lists every fault, so a draw can be looked at before it runs \
and replayed with `wiberctl scenario run FILE --seed N`.\n\n\
Exit codes: 0 every file is valid; 2 a file is not.\n\n\
Examples:\n  wiberctl scenario validate scenarios/*.toml\n  wiberctl scenario validate soak.toml --seed 7 --schedule"
    )]
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Seed of the [random] draw (as `scenario run --seed`); default: the file's `seed`, else a fresh one.
        #[arg(long, value_name = "N")]
        seed: Option<u64>,
        /// List every fault of each file (its [[faults]] and what [random] drew), in time order.
        #[arg(long)]
        schedule: bool,
    },
    /// List the scenarios of a directory: name, description, duration, faults.
    List {
        /// Directory of scenario files. Default: scenarios/ at the repository root.
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub stack: StackArgs,
    /// Run against the running stack even when the file has a [stack] section.
    #[arg(long)]
    pub attach: bool,
    /// Leave a stack that the run brought up running afterwards.
    #[arg(long)]
    pub keep_stack: bool,
    /// Take the project's stack (running or stopped) down with its volumes first, and
    /// bring it up in the shape of the file's [stack]: brokers, the topic's replication
    /// and min.insync.replicas, as `stack up --brokers N` makes them.
    #[arg(long, conflicts_with = "attach")]
    pub fresh: bool,
    /// Compare with an earlier run (a scenario or bench run directory, or its scenario.json / report.json);
    /// enables thresholds such as `"ack.p99" = "< 1.2 * baseline"`.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Also write one JUnit XML file for all the scenarios here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Where run directories go. Default: reports/ at the repository root.
    #[arg(long, env = "WIBER_REPORTS_DIR")]
    pub reports_dir: Option<PathBuf>,
    /// How long verify waits for the consumer group to drain after the load.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Seed of the [random] fault draw: the same file and seed draw the same faults, so
    /// `--seed N` replays a run that reported seed N. Default: the file's `seed`, else a
    /// fresh one (printed). Files without [random] ignore it.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Images, ports and wait, when the run brings the stack up.
    #[command(flatten)]
    pub up: UpFlags,
}

pub async fn run(cmd: ScenarioCmd, json: bool) -> Result<Exit> {
    match cmd {
        ScenarioCmd::Run(args) => run_files(*args, json).await,
        ScenarioCmd::Validate {
            files,
            seed,
            schedule,
        } => validate(&files, seed, schedule, json),
        ScenarioCmd::List { dir } => list(dir, json),
    }
}

async fn run_files(args: RunArgs, json: bool) -> Result<Exit> {
    let baseline = match &args.baseline {
        Some(p) => Some((p.clone(), scenario::metrics::load_baseline(p)?)),
        None => None,
    };
    let opts = scenario::run::RunOptions {
        stack: args.stack.locator(),
        images: args.up.images,
        ports: args.up.ports(),
        wait: args.up.wait,
        service_env: args.up.service_env.clone(),
        attach: args.attach,
        keep_stack: args.keep_stack,
        fresh: args.fresh,
        baseline,
        reports_dir: args
            .reports_dir
            .clone()
            .unwrap_or_else(super::bench::default_reports_dir),
        drain_timeout: args.drain_timeout,
        progress: !json,
        seed: args.seed,
    };
    let mut outcomes = Vec::new();
    for f in &args.files {
        let o = scenario::run::run(f, &opts).await;
        if !json {
            println!("{}", scenario::print::terminal(&o));
        }
        outcomes.push(o);
    }
    if let Some(p) = &args.junit {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let suites: Vec<_> = outcomes.iter().map(|o| o.junit()).collect();
        std::fs::write(p, scenario::junit::render(&suites))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if json {
        output::json(&outcomes);
    } else if outcomes.len() > 1 {
        println!("{}", scenario::print::overview(&outcomes));
    }
    let errors: Vec<String> = outcomes
        .iter()
        .filter(|o| o.verdict == RunVerdict::Error)
        .map(|o| {
            format!(
                "{}: {}",
                o.name,
                o.error.as_deref().unwrap_or("could not be run")
            )
        })
        .collect();
    if !errors.is_empty() {
        bail!(
            "{} of {} scenario(s) could not be run: {}",
            errors.len(),
            outcomes.len(),
            errors.join("; ")
        );
    }
    Ok(if outcomes.iter().all(|o| o.verdict == RunVerdict::Pass) {
        exit::PASS
    } else {
        exit::FAIL
    })
}

fn validate(files: &[PathBuf], seed: Option<u64>, schedule: bool, json: bool) -> Result<Exit> {
    let mut bad = Vec::new();
    let mut rows = Vec::new();
    for f in files {
        match scenario::load(f) {
            Ok(mut s) => {
                let drawn = scenario::random::expand(&mut s, seed);
                let mut row = serde_json::json!({"file": f, "name": s.name, "ok": true});
                if let Some((seed, summary)) = &drawn {
                    row["seed"] = serde_json::json!(seed);
                    row["random"] = serde_json::json!(summary);
                }
                let mut faults: Vec<&scenario::format::FaultSpec> = s.faults.iter().collect();
                faults.sort_by_key(|f| f.at);
                if schedule {
                    row["schedule"] = serde_json::json!(faults
                        .iter()
                        .map(|f| serde_json::json!({"at_s": f.at.as_secs_f64(), "line": f.line, "fault": f.describe()}))
                        .collect::<Vec<_>>());
                }
                if !json {
                    println!("{}: ok ({})", f.display(), s.name);
                    if let Some((seed, summary)) = &drawn {
                        println!(
                            "  {}",
                            scenario::random::describe(&f.display().to_string(), *seed, summary)
                        );
                    }
                    if schedule {
                        for fault in &faults {
                            println!("  line {:<4} {}", fault.line, fault.describe());
                        }
                    }
                }
                rows.push(row);
            }
            Err(e) => {
                rows.push(serde_json::json!({"file": f, "ok": false, "error": format!("{e:#}")}));
                bad.push(format!("{e:#}"));
            }
        }
    }
    if json {
        output::json(&rows);
    }
    if !bad.is_empty() {
        bail!(
            "{} of {} file(s) are not valid scenarios:\n{}",
            bad.len(),
            files.len(),
            bad.join("\n")
        );
    }
    Ok(exit::PASS)
}

fn list(dir: Option<PathBuf>, json: bool) -> Result<Exit> {
    let dir = match dir {
        Some(d) => d,
        None => crate::provision::repo_root()
            .map(|r| r.join("scenarios"))
            .unwrap_or_else(|_| PathBuf::from("scenarios")),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "cannot list {} (pass the directory of your scenario files)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut rows = Vec::new();
    let mut t = output::table(&["name", "description", "load", "faults", "file"]);
    for f in &files {
        match scenario::load(f) {
            Ok(s) => {
                let load = format!(
                    "{} s at {:.0} req/s",
                    s.load.duration().as_secs(),
                    s.load.mean_rate()
                );
                t.add_row(vec![
                    s.name.clone(),
                    s.description.clone(),
                    load.clone(),
                    if s.random.is_some() {
                        format!("{} + random", s.faults.len())
                    } else {
                        s.faults.len().to_string()
                    },
                    f.display().to_string(),
                ]);
                rows.push(serde_json::json!({"name": s.name, "description": s.description, "duration_s": s.load.duration().as_secs_f64(),
                    "mean_rate": s.load.mean_rate(), "faults": s.faults.iter().map(|f| f.describe()).collect::<Vec<_>>(), "random": s.random.is_some(), "file": f}));
            }
            Err(e) => {
                t.add_row(vec![
                    "(invalid)".to_string(),
                    format!("{e:#}"),
                    String::new(),
                    String::new(),
                    f.display().to_string(),
                ]);
                rows.push(serde_json::json!({"file": f, "error": format!("{e:#}")}));
            }
        }
    }
    if json {
        output::json(&rows);
    } else {
        println!("{t}");
    }
    Ok(exit::PASS)
}
