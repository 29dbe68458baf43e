//! `wiberctl completions` and `wiberctl man`: shell completions and man pages generated
//! from the command definition (clap_complete, clap_mangen), so they can never disagree
//! with `--help`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use clap_complete::Shell;

use crate::exit::{self, Exit};

#[derive(Args, Debug)]
#[command(after_help = "Install (then open a new shell):
  bash        wiberctl completions bash > ~/.local/share/bash-completion/completions/wiberctl
              (or: echo 'source <(wiberctl completions bash)' >> ~/.bashrc)
  zsh         wiberctl completions zsh > ~/.zfunc/_wiberctl
              and in ~/.zshrc, before compinit: fpath=(~/.zfunc $fpath); autoload -Uz compinit; compinit
  fish        wiberctl completions fish > ~/.config/fish/completions/wiberctl.fish
  elvish      wiberctl completions elvish >> ~/.config/elvish/rc.elv
  powershell  wiberctl completions powershell >> $PROFILE

Regenerate after upgrading wiberctl: the completions are made from this binary's commands.")]
pub struct CompletionsArgs {
    /// The shell to print completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Without --out, prints the top page (wiberctl.1) to stdout: \
`wiberctl man | man -l -`.
With --out, writes wiberctl.1 and one page per command (wiberctl-stack-up.1, ...) and prints \
each path written.

Examples:
  wiberctl man | man -l -
  wiberctl man --out ~/.local/share/man/man1 && man wiberctl-tail"
)]
pub struct ManArgs {
    /// Directory to write every page to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<Exit> {
    let name = cmd.get_name().to_string();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, name, &mut out);
    out.flush()
        .context("cannot write the completions to stdout")?;
    Ok(exit::PASS)
}

pub fn man(args: ManArgs, cmd: clap::Command) -> anyhow::Result<Exit> {
    let Some(dir) = args.out else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(cmd)
            .render(&mut out)
            .and_then(|()| out.flush())
            .context("cannot write the man page to stdout")?;
        return Ok(exit::PASS);
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create {} (choose another --out)", dir.display()))?;
    let written = write_pages(cmd, &dir)?;
    for p in &written {
        println!("{}", p.display());
    }
    eprintln!(
        "wiberctl man: wrote {} pages to {} (read one with `man -l {}`; a directory named man1 \
         under a MANPATH entry, e.g. ~/.local/share/man/man1, makes `man wiberctl` work)",
        written.len(),
        dir.display(),
        dir.join("wiberctl.1").display()
    );
    Ok(exit::PASS)
}

/// Writes the page of `cmd` and of every visible subcommand, depth first; returns the
/// paths written. What `clap_mangen::generate_to` does, but saying what it wrote.
fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(cmd: clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let page = clap_mangen::Man::new(cmd.clone());
        let path = page
            .generate_to(dir)
            .with_context(|| format!("cannot write {}", dir.join(page.get_filename()).display()))?;
        out.push(path);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub.clone(), dir, out)?;
        }
        Ok(())
    }
    // `help` is no command of ours to document; building names the subcommands'
    // pages after their full path (wiberctl-stack-up).
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, dir, &mut out)?;
    Ok(out)
}
