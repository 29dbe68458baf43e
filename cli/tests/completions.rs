//! `wiberctl completions` and `wiberctl man`, through the real binary: the bash script
//! parses (`bash -n`) and knows the commands, the other shells get a script, and
//! `man --out` writes a readable page for the program and for every command.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use clap::CommandFactory;

fn wiberctl(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wiberctl"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wiberctl");
    assert!(
        out.status.success(),
        "wiberctl {args:?} exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn bash_completions_parse_and_know_the_commands() {
    let script = String::from_utf8(wiberctl(&["completions", "bash"]).stdout).unwrap();
    for word in [
        "stack",
        "scenario",
        "tail",
        "completions",
        "--from-beginning",
    ] {
        assert!(
            script.contains(word),
            "bash completions do not mention {word}"
        );
    }
    assert!(have("bash"), "bash is needed to check the bash completions");
    let dir = tempdir("bash");
    let file = dir.join("wiberctl.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n rejects the completions: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // And sourcing it registers the completion function for wiberctl.
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p wiberctl", file.display()))
        .output()
        .unwrap();
    let registered = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        loaded.status.success() && registered.contains("wiberctl"),
        "sourcing the completions registers nothing: {registered} {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
}

#[test]
fn other_shells_get_a_script_naming_the_commands() {
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = String::from_utf8(wiberctl(&["completions", shell]).stdout).unwrap();
        assert!(
            script.len() > 1000 && script.contains("wiberctl") && script.contains("scenario"),
            "{shell} completions look empty:\n{}",
            &script[..script.len().min(300)]
        );
    }
    let help = String::from_utf8(wiberctl(&["completions", "--help"]).stdout).unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        assert!(
            help.contains(&format!("wiberctl completions {shell} ")),
            "--help does not say how to install the {shell} completions:\n{help}"
        );
    }
}

/// `wiberctl-stack-up` for `stack up`: every visible command of the definition.
fn expected_pages(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
    out.insert(format!("{prefix}.1"));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        expected_pages(sub, &format!("{prefix}-{}", sub.get_name()), out);
    }
}

#[test]
fn man_writes_a_readable_page_per_command() {
    let dir = tempdir("man").join("man1");
    let out = wiberctl(&["man", "--out", dir.to_str().unwrap()]);
    let mut expected = BTreeSet::new();
    expected_pages(&wiberctl::app::Cli::command(), "wiberctl", &mut expected);
    for page in [
        "wiberctl.1",
        "wiberctl-stack-up.1",
        "wiberctl-tail.1",
        "wiberctl-man.1",
    ] {
        assert!(expected.contains(page), "the definition has no {page}");
    }
    let written: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, expected, "pages written vs commands defined");
    // It reports each page it wrote.
    let reported = String::from_utf8(out.stdout).unwrap();
    assert_eq!(reported.lines().count(), expected.len(), "{reported}");
    assert!(reported.contains("wiberctl-stack-up.1"), "{reported}");

    for page in &expected {
        let path = dir.join(page);
        let text = std::fs::read_to_string(&path).unwrap();
        let name = page.trim_end_matches(".1");
        assert!(
            text.contains(&format!(".TH {name} 1")),
            "{page} has no roff title header"
        );
        render_check(&path, name);
    }

    // Without --out: the top page on stdout.
    let top = String::from_utf8(wiberctl(&["man"]).stdout).unwrap();
    assert!(top.contains(".TH wiberctl 1") && top.contains(".SH SUBCOMMANDS"));
}

/// Renders a page the way a reader would: `man -l` if installed, else groff (with
/// preconv, `-k`, as man does for the UTF-8 in the help texts). Without either, the
/// `.TH` check above is all there is.
fn render_check(path: &Path, name: &str) {
    let rendered = if have("man") {
        Command::new("man")
            .arg("-l")
            .arg(path)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap()
    } else if have("groff") {
        Command::new("groff")
            .args(["-k", "-man", "-Tutf8"])
            .arg(path)
            .output()
            .unwrap()
    } else {
        eprintln!("neither man nor groff installed: {name} checked for .TH only");
        return;
    };
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        rendered.status.success(),
        "{} does not render: {}",
        path.display(),
        String::from_utf8_lossy(&rendered.stderr)
    );
    // Rendered, not echoed: the section macros became headings, the name is in them.
    assert!(
        text.contains("NAME") && text.contains("SYNOPSIS") && !text.contains(".SH"),
        "{} rendered oddly:\n{text}",
        path.display()
    );
    assert!(text.contains(name), "{name} missing from its rendered page");
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("e2e").join(format!(
        "completions-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
