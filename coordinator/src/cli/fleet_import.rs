//! `etcdops fleet import`: the fleet file written from an Ansible inventory, the changes shown first.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::cli::{GlobalArgs, emit};
use crate::exit::ExitStatus;
use crate::fleet::import::{self, Change, TlsOverride};
use crate::fleet::inventory::{self, GroupSelection, GroupSpec};
use crate::fleet::{Fleet, FleetError};

/// `etcdops fleet ...`
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Write or update the fleet file from an Ansible inventory (`ansible-inventory --list` JSON).
    #[command(long_about = IMPORT_ABOUT, after_help = IMPORT_AFTER_HELP)]
    Import(ImportArgs),
}

const IMPORT_ABOUT: &str = "\
Write or update the fleet file (--fleet) from an Ansible inventory: the JSON that
`ansible-inventory -i INVENTORY --list` prints (any inventory source: INI, YAML, plugins;
ranges and variable precedence resolved by Ansible).

Groups are clusters: those named with --group GROUP[=CLUSTER], else the children of the
group `etcdops_clusters`, else kubespray's group `etcd`. A cluster's members are its group's
hosts and those of its child groups. Per host:

  etcdops_member_name   the etcd member name (default: etcd_member_name, kubespray's, else
                        the inventory hostname)
  etcdops_agent_url     the agent URL, https://HOST:PORT (default: built from the next two)
  etcdops_agent_host    the agent's address (default: ansible_host, else the hostname)
  etcdops_agent_port    the agent's port (default: 7443)
  etcdops_spare         true: a spare host (no member yet), not imported

An imported cluster replaces the members of the fleet's cluster of that name (its
[clusters.backup] stays); clusters the inventory does not name are kept. [tls] is kept
unless --ca/--cert/--key are given; a new fleet file needs all three.

The changes are printed first (+ added, - removed, ~ changed); then the file is written
atomically (a temporary file renamed over it), unless --dry-run or nothing changed. Bad input
(an unknown group, a host in two clusters, two hosts with one member name or agent, a host
without an address) exits 2 naming the group or host, and the fleet file is not touched.
The file is written back from its data: comments in it are not kept.";

const IMPORT_AFTER_HELP: &str = "\
Examples:
  ansible-inventory -i inventory.ini --list | etcdops fleet import --ansible-inventory - --dry-run
  ansible-inventory -i hosts.yml --list > inv.json && etcdops fleet import --ansible-inventory inv.json
  etcdops --fleet /etc/etcdops/fleet.toml fleet import --ansible-inventory inv.json \\
      --group etcd=prod-a --ca pki/ca.crt --cert pki/coordinator-ops.crt --key pki/coordinator-ops.key

Exit codes: 0 written (or nothing to change, or --dry-run); 2 a bad inventory, bad flags, or a
fleet file that cannot be read or written (the file is left as it was).";

/// `etcdops fleet import` options.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The JSON of `ansible-inventory -i INVENTORY --list`; `-` reads standard input.
    #[arg(long, value_name = "FILE|-")]
    pub ansible_inventory: PathBuf,
    /// A group that is a cluster, optionally under another name (GROUP=CLUSTER); repeatable.
    #[arg(long = "group", value_name = "GROUP[=CLUSTER]")]
    pub groups: Vec<GroupSpec>,
    /// Show the changes; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// [tls] ca: the fleet CA certificate (required for a new fleet file).
    #[arg(long, value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// [tls] cert: the coordinator's certificate (required for a new fleet file).
    #[arg(long, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// [tls] key: the coordinator's private key (required for a new fleet file).
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
}

/// A bad inventory or a merge that makes no valid fleet: exit 2, nothing written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("inventory {path}: {source}")]
    Inventory {
        path: String,
        #[source]
        source: Box<inventory::InventoryError>,
    },
    #[error("cannot read the inventory {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Merge(#[from] import::MergeError),
}

/// `fleet import -w json`.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The fleet file.
    pub fleet: PathBuf,
    pub dry_run: bool,
    /// Whether the file was written.
    pub written: bool,
    /// The clusters read from the inventory.
    pub imported: Vec<String>,
    /// Clusters of the fleet file the inventory does not name, kept unchanged.
    pub kept: Vec<String>,
    /// What differs, in file order.
    pub changes: Vec<Change>,
}

fn render(report: &ImportReport) -> String {
    let mut text: String = report.changes.iter().map(|c| format!("{c}\n")).collect();
    for cluster in &report.kept {
        text.push_str(&format!(
            "= cluster {cluster}: not in the inventory, kept unchanged\n"
        ));
    }
    let fleet = report.fleet.display();
    let n = report.changes.len();
    text.push_str(&if report.changes.is_empty() {
        format!("no changes: {fleet} is up to date\n")
    } else if report.dry_run {
        format!("{n} change(s); --dry-run: {fleet} not written\n")
    } else {
        format!("{n} change(s) written to {fleet}\n")
    });
    text
}

fn read_input(path: &Path) -> Result<String, ImportError> {
    let shown = path.display().to_string();
    let read_err = |source| ImportError::Read {
        path: shown.clone(),
        source,
    };
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(read_err)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(read_err)
    }
}

/// `etcdops fleet import`.
pub(crate) fn import(
    global: &GlobalArgs,
    args: &ImportArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let text = read_input(&args.ansible_inventory)?;
    let selection = if args.groups.is_empty() {
        GroupSelection::Default
    } else {
        GroupSelection::Named(args.groups.clone())
    };
    let shown = if args.ansible_inventory == Path::new("-") {
        "(standard input)".to_string()
    } else {
        args.ansible_inventory.display().to_string()
    };
    let clusters = inventory::parse(&text, &selection).map_err(|source| ImportError::Inventory {
        path: shown,
        source: Box::new(source),
    })?;
    let existing = match Fleet::load_as_written(&global.fleet) {
        Ok(fleet) => Some(fleet),
        Err(FleetError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let tls = TlsOverride {
        ca: args.ca.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
    };
    let merged = import::merge(existing.as_ref(), &clusters, &tls).map_err(ImportError::from)?;
    let write = !args.dry_run && !merged.changes.is_empty();
    if write {
        merged.fleet.save(&global.fleet)?;
    }
    let report = ImportReport {
        fleet: global.fleet.clone(),
        dry_run: args.dry_run,
        written: write,
        imported: clusters.iter().map(|c| c.name.clone()).collect(),
        kept: merged.kept,
        changes: merged.changes,
    };
    emit(out, global.write_out, &report, render)?;
    Ok(ExitStatus::Ok)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    const INV: &str = r#"{"_meta": {"hostvars": {
        "n1": {"ansible_host": "10.0.0.1", "etcd_member_name": "etcd1"},
        "n2": {"ansible_host": "10.0.0.2", "etcd_member_name": "etcd2"}}},
      "etcd": {"hosts": ["n1", "n2"]}}"#;

    fn run(args: &[&str]) -> (ExitStatus, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = crate::cli::run_with_io(
            std::iter::once("etcdops").chain(args.iter().copied()),
            &mut out,
            &mut err,
        );
        (
            status,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    #[test]
    fn writes_a_new_fleet_then_nothing_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inv = dir.path().join("inv.json");
        std::fs::write(&inv, INV).expect("write");
        let fleet = dir.path().join("fleet.toml");
        let (f, i) = (fleet.to_str().expect("utf-8"), inv.to_str().expect("utf-8"));

        let (status, _, err) = run(&["--fleet", f, "fleet", "import", "--ansible-inventory", i]);
        assert_eq!(status, ExitStatus::Usage, "{err}");
        assert!(err.contains("--ca, --cert and --key"), "{err}");
        assert!(!fleet.exists());

        let tls = ["--ca", "ca.crt", "--cert", "c.crt", "--key", "c.key"];
        let mut args = vec![
            "--fleet",
            f,
            "fleet",
            "import",
            "--ansible-inventory",
            i,
            "--dry-run",
        ];
        args.extend(tls);
        let (status, out, err) = run(&args);
        assert_eq!(status, ExitStatus::Ok, "{err}");
        assert!(
            out.contains("+ etcd/etcd1 https://10.0.0.1:7443 (host n1)"),
            "{out}"
        );
        assert!(out.contains("--dry-run"), "{out}");
        assert!(!fleet.exists(), "--dry-run writes nothing");

        args.retain(|a| *a != "--dry-run");
        let (status, out, err) = run(&args);
        assert_eq!(status, ExitStatus::Ok, "{err}");
        assert!(out.contains("written to"), "{out}");
        let written = Fleet::load_as_written(&fleet).expect("written fleet");
        assert_eq!(written.clusters[0].members.len(), 2);
        assert_eq!(written.tls.ca, PathBuf::from("ca.crt"));

        let (status, out, _) = run(&[
            "--fleet",
            f,
            "fleet",
            "import",
            "--ansible-inventory",
            i,
            "-w",
            "json",
        ]);
        assert_eq!(status, ExitStatus::Ok);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["written"], false);
        assert_eq!(v["changes"].as_array().map(Vec::len), Some(0));
        assert_eq!(v["imported"][0], "etcd");
    }

    #[test]
    fn bad_input_exits_2_and_leaves_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = dir.path().join("fleet.toml");
        let before = "[tls]\nca = \"ca.crt\"\ncert = \"c.crt\"\nkey = \"c.key\"\n\
            [[clusters]]\nname = \"etcd\"\n[[clusters.members]]\nname = \"e1\"\nagent = \"https://127.0.0.1:1\"\n";
        std::fs::write(&fleet, before).expect("write");
        let f = fleet.to_str().expect("utf-8");
        for (inv, group, expect) in [
            (INV, Some("nope"), "no group \"nope\""),
            ("{", None, "not JSON"),
            (
                r#"{"_meta": {"hostvars": {"n1": {"ansible_host": ""}}}, "etcd": {"hosts": ["n1"]}}"#,
                None,
                "host \"n1\" (group \"etcd\") has no address",
            ),
        ] {
            let path = dir.path().join("inv.json");
            std::fs::write(&path, inv).expect("write");
            let mut args = vec![
                "--fleet",
                f,
                "fleet",
                "import",
                "--ansible-inventory",
                path.to_str().expect("utf-8"),
            ];
            if let Some(g) = group {
                args.extend(["--group", g]);
            }
            let (status, out, err) = run(&args);
            assert_eq!(status, ExitStatus::Usage, "{err}");
            assert!(out.is_empty() && err.contains(expect), "{err}");
            assert_eq!(std::fs::read_to_string(&fleet).expect("read"), before);
        }
        let (status, _, err) = run(&[
            "--fleet",
            f,
            "fleet",
            "import",
            "--ansible-inventory",
            "/nonexistent/inv.json",
        ]);
        assert_eq!(status, ExitStatus::Usage, "{err}");
        assert!(err.contains("/nonexistent/inv.json"), "{err}");
        assert!(
            Cli::try_parse_from([
                "etcdops",
                "fleet",
                "import",
                "--ansible-inventory",
                "-",
                "--group",
                "=x"
            ])
            .is_err()
        );
    }
}
