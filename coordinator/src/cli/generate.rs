//! `etcdops completions SHELL` (shell completion scripts, clap_complete) and
//! the hidden `etcdops generate-manpages --out-dir DIR` (one man page per
//! command, clap_mangen): both generated from the clap definitions in
//! [`crate::cli`], the one source. `deploy/dev/package.sh` runs them from the
//! built binary to fill the `etcdops` Debian package.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::exit::ExitStatus;

pub(crate) const COMPLETIONS_ABOUT: &str = "\
Print the shell completion script for SHELL on stdout.

The Debian package installs them already (bash-completion, zsh's
vendor-completions and fish's vendor_completions.d); this command is for
other installs.";

pub(crate) const COMPLETIONS_AFTER_HELP: &str = "\
Examples:
  etcdops completions bash > ~/.local/share/bash-completion/completions/etcdops
  etcdops completions zsh > \"${fpath[1]}/_etcdops\"
  etcdops completions fish > ~/.config/fish/completions/etcdops.fish";

/// `etcdops completions SHELL`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (also elvish, powershell).
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

/// `etcdops generate-manpages --out-dir DIR` (hidden: for packaging).
#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// Where to write the pages (etcdops.1, etcdops-status.1, ...); created when missing.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// Writes the completion script for `args.shell` to `out`.
pub(crate) fn completions(args: &CompletionsArgs, out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name, &mut script);
    match out.write_all(&script) {
        // `etcdops completions bash | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitStatus::Ok),
        written => {
            written.context("cannot write the completion script to stdout")?;
            Ok(ExitStatus::Ok)
        }
    }
}

/// Writes one man page per visible command into `args.out_dir` and lists
/// the files written on `out`.
pub(crate) fn manpages(args: &ManpagesArgs, out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    let written = write_manpages(&args.out_dir)?;
    for path in written {
        writeln!(out, "{}", path.display()).context("cannot write to stdout")?;
    }
    Ok(ExitStatus::Ok)
}

/// The man page names (without `.1`) of every visible command: `etcdops`,
/// `etcdops-status`, `etcdops-member-add`, ... (no `help`, no hidden command).
pub fn manpage_names() -> BTreeSet<String> {
    visible_commands(built_command()).iter().map(page_name).collect()
}

/// The whole command tree, built (global options propagated, display names
/// such as `etcdops-member-add` set), without `help` subcommands.
fn built_command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `cmd` and every visible command below it, parents first.
fn visible_commands(cmd: clap::Command) -> Vec<clap::Command> {
    let mut all = vec![];
    let mut stack = vec![cmd];
    while let Some(cmd) = stack.pop() {
        stack.extend(
            cmd.get_subcommands()
                .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
                .cloned()
                .collect::<Vec<_>>()
                .into_iter()
                .rev(),
        );
        all.push(cmd);
    }
    all
}

fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned()
}

fn write_manpages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let mut written = vec![];
    for cmd in visible_commands(built_command()) {
        let path = dir.join(format!("{}.1", page_name(&cmd)));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .manual("etcdops manual")
            .render(&mut page)
            .with_context(|| format!("cannot render the man page {}", path.display()))?;
        std::fs::write(&path, page)
            .with_context(|| format!("cannot write the man page {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_has_a_page_name() {
        let names = manpage_names();
        for name in [
            "etcdops",
            "etcdops-status",
            "etcdops-member-add",
            "etcdops-op-list",
            "etcdops-completions",
        ] {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.ends_with("-help")), "{names:?}");
        assert!(
            !names.iter().any(|n| n.contains("generate-manpages")),
            "{names:?}"
        );
    }

    #[test]
    fn writes_one_page_per_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write_manpages(dir.path()).expect("pages");
        assert_eq!(written.len(), manpage_names().len());
        let page = std::fs::read_to_string(dir.path().join("etcdops-member-add.1")).expect("page");
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        assert!(page.contains("member"), "{page}");
    }

    #[test]
    fn bash_completion_names_subcommands() {
        let mut out = Vec::new();
        completions(&CompletionsArgs { shell: Shell::Bash }, &mut out).expect("completions");
        let script = String::from_utf8(out).expect("utf-8");
        assert!(
            script.contains("etcdops") && script.contains("member"),
            "{script}"
        );
    }
}
