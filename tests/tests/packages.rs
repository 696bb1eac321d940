//! The two Debian packages, as `deploy/dev/package.sh --profile dev` made
//! them (`<target>/debian-dev/`, which `deploy/dev/test.sh` fills after
//! `cargo build`): lintian finds no errors; `dpkg-deb` shows the files,
//! control fields, conffile and maintainer scripts expected; the `etcdops`
//! package has a man page for exactly every visible command of the clap
//! tree and the completions the current binary prints; `--revision N`
//! makes a newer version under the documented name.
//!
//! Missing packages or tools fail the test with the command to run; it
//! never skips. Installing, upgrading and purging on a host is the nspawn
//! suite's (tests/tests/systemd_hosts.rs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;

const PACKAGE_CMD: &str = "bash deploy/dev/package.sh --profile dev --no-build";

/// The repository root (the tests crate's parent).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_path_buf()
}

/// The target dir these tests were built in (the thin CLI copy lives in
/// `<target>/debug/`), wherever CARGO_TARGET_DIR points.
fn target_dir() -> PathBuf {
    let cli = Path::new(env!("CARGO_BIN_EXE_e2e-etcdops"));
    cli.parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/e2e-etcdops")
        .to_path_buf()
}

/// Runs a command; a missing program or a spawn error fails the test,
/// naming the command.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program} {}`: {e} (deploy/dev/setup.sh installs lintian, dpkg-dev and cargo-deb)",
                args.join(" ")
            )
        })
}

/// Runs a command that must succeed; returns its stdout.
fn stdout_of(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn arch() -> String {
    stdout_of("dpkg", &["--print-architecture"]).trim().to_owned()
}

/// `<target>/debian-dev/<name>_<version>-1_<arch>.deb`, which must exist.
fn deb(name: &str) -> PathBuf {
    let path = target_dir().join("debian-dev").join(format!(
        "{name}_{}-1_{}.deb",
        env!("CARGO_PKG_VERSION"),
        arch()
    ));
    assert!(
        path.is_file(),
        "{} is missing: after `cargo build`, run `{PACKAGE_CMD}` (deploy/dev/test.sh does)",
        path.display()
    );
    path
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The paths in a package (`./usr/bin/etcdops` without the `./`);
/// directories end in `/`.
fn contents(deb: &Path) -> BTreeSet<String> {
    stdout_of("dpkg-deb", &["--contents", path_str(deb)])
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(|path| path.trim_start_matches("./").to_owned())
        .collect()
}

/// A control field (`dpkg-deb --field`).
fn field(deb: &Path, name: &str) -> String {
    stdout_of("dpkg-deb", &["--field", path_str(deb), name])
        .trim()
        .to_owned()
}

/// A control member (`conffiles`, `postinst`, ...) of a package.
fn control_member(deb: &Path, member: &str) -> String {
    stdout_of("dpkg-deb", &["--info", path_str(deb), member])
}

/// The package's files, unpacked into a temporary directory.
fn unpacked(deb: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    stdout_of("dpkg-deb", &["--extract", path_str(deb), path_str(dir.path())]);
    dir
}

/// The lines of a shell script that are not comments.
fn code_lines(script: &str) -> Vec<&str> {
    script
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

#[test]
fn lintian_finds_no_errors() {
    let (agent, cli) = (deb("etcdops-agent"), deb("etcdops"));
    let args = ["--fail-on", "error", path_str(&agent), path_str(&cli)];
    let out = run("lintian", &args);
    assert!(
        out.status.success(),
        "`lintian {}` failed ({}); fix the package or add an override with its reason (deploy/debian/README.md):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn agent_package_has_binary_unit_conffile_and_recommends() {
    let deb = deb("etcdops-agent");
    let files = contents(&deb);
    for path in [
        "usr/bin/etcdops-agent",
        "usr/lib/systemd/system/etcdops-agent.service",
        "etc/etcdops/agent.toml",
        "usr/share/man/man8/etcdops-agent.8.gz",
        "usr/share/man/man8/etcdops-agent-probe-disk.8.gz",
        "usr/share/doc/etcdops-agent/copyright",
        "usr/share/doc/etcdops-agent/changelog.Debian.gz",
        "usr/share/lintian/overrides/etcdops-agent",
    ] {
        assert!(
            files.contains(path),
            "{path} not in {}: {files:#?}",
            deb.display()
        );
    }
    for path in &files {
        assert!(
            !path.starts_with("var/lib/etcd/")
                && !path.starts_with("etc/default/")
                && !path.starts_with("etc/etcdops/pki"),
            "{path} in {}: the package must not ship etcd's data, env file or the PKI",
            deb.display()
        );
    }
    assert_eq!(field(&deb, "Package"), "etcdops-agent");
    assert_eq!(field(&deb, "Recommends"), "etcd-server, etcd-client");
    assert!(field(&deb, "Depends").contains("libc6"), "Depends: $auto");
    assert_eq!(
        control_member(&deb, "conffiles").trim(),
        "/etc/etcdops/agent.toml"
    );

    // The shipped files are the repository's, unchanged.
    let root = unpacked(&deb);
    for (packaged, source) in [
        (
            "usr/lib/systemd/system/etcdops-agent.service",
            "deploy/systemd/etcdops-agent.service",
        ),
        ("etc/etcdops/agent.toml", "deploy/config/agent.toml"),
    ] {
        let packaged_text = std::fs::read_to_string(root.path().join(packaged)).expect("packaged file");
        let source_text = std::fs::read_to_string(repo().join(source)).expect("source file");
        assert_eq!(
            packaged_text, source_text,
            "{packaged} in the package differs from {source}: rebuild with `{PACKAGE_CMD}`"
        );
    }

    // Installing enables the unit and starts nothing; an upgrade restarts a running agent only.
    let postinst = control_member(&deb, "postinst");
    let code = code_lines(&postinst);
    assert!(
        code.iter()
            .any(|l| l.contains("deb-systemd-helper enable etcdops-agent.service")),
        "{postinst}"
    );
    assert!(
        code.iter()
            .any(|l| l.contains("deb-systemd-invoke try-restart etcdops-agent.service")),
        "{postinst}"
    );
    assert!(
        !code
            .iter()
            .any(|l| l.contains("deb-systemd-invoke start") || l.contains("deb-systemd-invoke restart")),
        "installing must not start anything:\n{postinst}"
    );
    assert!(
        code.iter()
            .any(|l| l.contains("install -d -m 0700") && l.contains("/var/lib/etcdops-agent")),
        "{postinst}"
    );

    // Purge removes the agent's own state only; no script touches etcd or the PKI.
    let postrm = control_member(&deb, "postrm");
    assert!(
        code_lines(&postrm).contains(&"rm -rf /var/lib/etcdops-agent"),
        "{postrm}"
    );
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        let out = run("dpkg-deb", &["--info", path_str(&deb), script]);
        if !out.status.success() {
            continue; // no such script in the package
        }
        let text = String::from_utf8_lossy(&out.stdout);
        for line in code_lines(&text) {
            for forbidden in [
                "/var/lib/etcd ",
                "/var/lib/etcd/",
                "/etc/default",
                "/etc/etcdops/pki",
                "etcd.service",
            ] {
                assert!(
                    !format!("{line} ").contains(forbidden),
                    "{script} touches {forbidden}: {line}"
                );
            }
            assert!(
                !(line.ends_with("/var/lib/etcd") || line.contains("/var/lib/etcd;")),
                "{script} touches /var/lib/etcd: {line}"
            );
        }
    }
}

/// Man page names of every visible command of the clap tree:
/// `etcdops`, `etcdops-member`, `etcdops-member-add`, ...
fn clap_page_names() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, prefix: &str, names: &mut BTreeSet<String>) {
        names.insert(prefix.to_owned());
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            walk(sub, &format!("{prefix}-{}", sub.get_name()), names);
        }
    }
    let mut names = BTreeSet::new();
    walk(&etcdops_coordinator::cli::Cli::command(), "etcdops", &mut names);
    names
}

#[test]
fn cli_package_has_a_man_page_per_command_and_completions() {
    let deb = deb("etcdops");
    let files = contents(&deb);
    for path in [
        "usr/bin/etcdops",
        "usr/share/bash-completion/completions/etcdops",
        "usr/share/zsh/vendor-completions/_etcdops",
        "usr/share/fish/vendor_completions.d/etcdops.fish",
        "usr/share/doc/etcdops/copyright",
        "usr/share/doc/etcdops/changelog.Debian.gz",
        "usr/share/lintian/overrides/etcdops",
        "usr/lib/systemd/system/etcdops-serve.service",
        "usr/share/doc/etcdops/examples/serve.toml",
    ] {
        assert!(
            files.contains(path),
            "{path} not in {}: {files:#?}",
            deb.display()
        );
    }
    assert_eq!(field(&deb, "Package"), "etcdops");
    // etcdops-serve.service ships as in the tree, DISABLED: the package never
    // enables nor starts it (an upgrade restarts a running one only).
    let root = unpacked(&deb);
    let shipped = std::fs::read_to_string(root.path().join("usr/lib/systemd/system/etcdops-serve.service"))
        .expect("packaged serve unit");
    let tree =
        std::fs::read_to_string(repo().join("deploy/systemd/etcdops-serve.service")).expect("serve unit");
    assert_eq!(shipped, tree, "rebuild with `{PACKAGE_CMD}`");
    assert!(
        !files
            .iter()
            .any(|p| p.starts_with("usr/lib/systemd/system/etcdops-agent")),
        "the agent's unit belongs to etcdops-agent"
    );
    let postinst = control_member(&deb, "postinst");
    let code = code_lines(&postinst);
    // Disabled: dh's snippet enables the unit only where the admin had
    // (`debian-installed` then `was-enabled`), never on a fresh install.
    assert!(
        code.iter()
            .any(|l| l.contains("deb-systemd-helper debian-installed etcdops-serve.service")),
        "{postinst}"
    );
    assert!(
        !code
            .iter()
            .any(|l| l.contains("deb-systemd-invoke start") || l.contains("deb-systemd-invoke restart")),
        "{postinst}"
    );
    assert!(
        code.iter()
            .any(|l| l.contains("install -d -m 0700") && l.contains("/var/lib/etcdops")),
        "{postinst}"
    );

    let pages: BTreeSet<String> = files
        .iter()
        .filter_map(|path| path.strip_prefix("usr/share/man/man1/"))
        .filter(|name| !name.is_empty())
        .map(|name| {
            name.strip_suffix(".1.gz")
                .unwrap_or_else(|| panic!("usr/share/man/man1/{name}: not a gzipped section-1 page"))
                .to_owned()
        })
        .collect();
    let expected = clap_page_names();
    assert!(
        expected.len() > 30 && expected.contains("etcdops-member-add"),
        "{expected:?}"
    );
    assert_eq!(
        pages,
        expected,
        "the man pages in {} are not one per visible command: rebuild with `{PACKAGE_CMD}`",
        deb.display()
    );
    assert_eq!(
        expected,
        etcdops_coordinator::cli::manpage_names(),
        "generate-manpages and the clap tree disagree"
    );

    // The packaged completions are what the current binary prints.
    let root = unpacked(&deb);
    let cli = env!("CARGO_BIN_EXE_e2e-etcdops");
    for (shell, packaged) in [
        ("bash", "usr/share/bash-completion/completions/etcdops"),
        ("zsh", "usr/share/zsh/vendor-completions/_etcdops"),
        ("fish", "usr/share/fish/vendor_completions.d/etcdops.fish"),
    ] {
        let printed = stdout_of(cli, &["completions", shell]);
        let shipped = std::fs::read_to_string(root.path().join(packaged)).expect("packaged completions");
        assert!(
            printed == shipped,
            "{packaged} differs from `etcdops completions {shell}`: rebuild with `{PACKAGE_CMD}`"
        );
    }
}

#[test]
fn completions_bash_names_the_subcommands() {
    let script = stdout_of(env!("CARGO_BIN_EXE_e2e-etcdops"), &["completions", "bash"]);
    assert!(!script.trim().is_empty());
    assert!(
        script.contains("etcdops") && script.contains("member"),
        "{script}"
    );
    assert!(script.contains("complete -F"), "{script}");
    let out = run(env!("CARGO_BIN_EXE_e2e-etcdops"), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn package_sh_revision_makes_a_newer_version() {
    // The packages above exist: the binaries are built.
    deb("etcdops-agent");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "deploy/dev/package.sh",
        "--profile",
        "dev",
        "--no-build",
        "--revision",
        "2",
        "--out-dir",
        path_str(out_dir.path()),
    ];
    let mut command = Command::new("bash");
    command.args(args).current_dir(repo());
    command.env("CARGO_TARGET_DIR", target_dir());
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run `bash {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`bash {}` failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let version = format!("{}-2", env!("CARGO_PKG_VERSION"));
    let arch = arch();
    let expected: Vec<PathBuf> = ["etcdops-agent", "etcdops"]
        .iter()
        .map(|name| out_dir.path().join(format!("{name}_{version}_{arch}.deb")))
        .collect();
    let printed: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(printed, expected, "package.sh prints the two paths, agent first");
    for deb in &expected {
        assert_eq!(field(deb, "Version"), version);
    }
    let newer = run(
        "dpkg",
        &[
            "--compare-versions",
            &version,
            "gt",
            &format!("{}-1", env!("CARGO_PKG_VERSION")),
        ],
    );
    assert!(newer.status.success(), "{version} must be newer than revision 1");
}
