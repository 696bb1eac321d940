//! End-to-end: `etcdops fleet import` on inventories converted by the real
//! `ansible-inventory` (INI and YAML): the fleet file written, the diff shown
//! first, `--dry-run`, stdin, a second import changing nothing, bad inventories
//! refused with exit 2 naming the group or host and the fleet file untouched,
//! and an imported fleet that `etcdops status` reads a real cluster through.
//!
//! `ansible-inventory` (ansible-core, installed by `deploy/dev/setup.sh`) must
//! be on PATH: without it these tests fail, they never skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use etcdops_tests::{CliOutput, Cluster, bins};

/// `ansible-inventory -i INVENTORY --list`: its JSON.
fn ansible_list(inventory: &Path) -> String {
    let out = Command::new("ansible-inventory")
        .arg("-i")
        .arg(inventory)
        .arg("--list")
        .env(
            "ANSIBLE_LOCAL_TEMP",
            inventory.parent().expect("dir").join("ansible-tmp"),
        )
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run ansible-inventory ({e}): install ansible-core with deploy/dev/setup.sh \
                 (pip install ansible-core==2.19.14); this test never skips"
            )
        });
    assert!(
        out.status.success(),
        "ansible-inventory -i {} --list failed:\n{}",
        inventory.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 JSON")
}

/// `etcdops --fleet FLEET ARGS`, with `stdin` fed when given.
fn etcdops(fleet: &Path, args: &[&str], stdin: Option<&str>) -> CliOutput {
    let mut child = Command::new(bins!().cli)
        .arg("--fleet")
        .arg(fleet)
        .args(args)
        .env_remove("ETCDOPS_FLEET")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running etcdops");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("writing stdin");
    }
    let out = child.wait_with_output().expect("etcdops output");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

const INI: &str = "\
[etcd_prod_a]
node1 ansible_host=10.0.0.1 etcd_member_name=etcd1
node2 ansible_host=10.0.0.2 etcd_member_name=etcd2
node3 ansible_host=10.0.0.3 etcd_member_name=etcd3

[etcd_prod_b]
db[1:3].example.com

[etcd_prod_b:vars]
etcdops_agent_port=8443

[etcdops_clusters:children]
etcd_prod_a
etcd_prod_b

[web]
www1 ansible_host=10.0.9.1
";

const TLS: [&str; 6] = [
    "--ca",
    "pki/ca.crt",
    "--cert",
    "pki/coordinator-ops.crt",
    "--key",
    "pki/coordinator-ops.key",
];

#[test]
fn imports_an_ini_inventory_shows_the_diff_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = ansible_list(&write(dir.path(), "hosts.ini", INI));
    let inv = write(dir.path(), "inv.json", &json);
    let inv = inv.to_str().expect("utf-8");
    let fleet = dir.path().join("fleet.toml");

    // --dry-run shows every change and writes nothing.
    let mut args = vec!["fleet", "import", "--ansible-inventory", inv, "--dry-run"];
    args.extend(TLS);
    let out = etcdops(&fleet, &args, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for line in [
        "+ [tls] ca = pki/ca.crt",
        "+ cluster etcd_prod_a (group etcd_prod_a)",
        "+ etcd_prod_a/etcd1 https://10.0.0.1:7443 (host node1)",
        "+ etcd_prod_b/db3.example.com https://db3.example.com:8443 (host db3.example.com)",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?}:\n{}", out.stdout);
    }
    assert!(!out.stdout.contains("www1"), "{}", out.stdout);
    assert!(!fleet.exists(), "--dry-run wrote the fleet file");

    // Written for real, from stdin this time.
    let mut args = vec!["fleet", "import", "--ansible-inventory", "-"];
    args.extend(TLS);
    let out = etcdops(&fleet, &args, Some(&json));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("written to"), "{}", out.stdout);
    let text = std::fs::read_to_string(&fleet).expect("fleet written");
    assert!(
        text.contains("ca = \"pki/ca.crt\""),
        "relative paths as given:\n{text}"
    );
    assert!(text.contains("agent = \"https://10.0.0.2:7443\""), "{text}");
    assert!(text.contains("name = \"etcd_prod_b\""), "{text}");

    // The same inventory again: nothing to change, the file not rewritten.
    let before = std::fs::metadata(&fleet)
        .expect("meta")
        .modified()
        .expect("mtime");
    let out = etcdops(
        &fleet,
        &["fleet", "import", "--ansible-inventory", inv, "-w", "json"],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["written"], false, "{report}");
    assert_eq!(report["changes"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["imported"],
        serde_json::json!(["etcd_prod_a", "etcd_prod_b"])
    );
    assert_eq!(
        std::fs::metadata(&fleet)
            .expect("meta")
            .modified()
            .expect("mtime"),
        before
    );

    // A changed inventory: one member moved, one gone, one new; the diff says so.
    let changed = INI
        .replace("node2 ansible_host=10.0.0.2", "node2 ansible_host=10.0.0.22")
        .replace(
            "node3 ansible_host=10.0.0.3 etcd_member_name=etcd3\n",
            "node4 ansible_host=10.0.0.4 etcd_member_name=etcd4\n",
        );
    let json = ansible_list(&write(dir.path(), "hosts.ini", &changed));
    let out = etcdops(
        &fleet,
        &[
            "fleet",
            "import",
            "--ansible-inventory",
            "-",
            "--group",
            "etcd_prod_a",
        ],
        Some(&json),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let diff: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        diff,
        [
            "~ etcd_prod_a/etcd2 https://10.0.0.2:7443 -> https://10.0.0.22:7443 (host node2)",
            "- etcd_prod_a/etcd3 https://10.0.0.3:7443",
            "+ etcd_prod_a/etcd4 https://10.0.0.4:7443 (host node4)",
            "= cluster etcd_prod_b: not in the inventory, kept unchanged",
            &format!("3 change(s) written to {}", fleet.display()),
        ]
    );
}

#[test]
fn imports_a_yaml_inventory_with_kubespray_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "\
all:
  children:
    kube_control_plane:
      hosts:
        cp1: {ansible_host: 192.0.2.11, etcd_member_name: etcd1}
        cp2: {ansible_host: 192.0.2.12, etcd_member_name: etcd2}
        cp3: {ansible_host: 192.0.2.13, etcd_member_name: etcd3}
    etcd:
      children:
        kube_control_plane: {}
      vars:
        etcdops_agent_port: 9443
";
    let json = ansible_list(&write(dir.path(), "hosts.yml", yaml));
    let fleet = dir.path().join("fleet.toml");
    let mut args = vec![
        "fleet",
        "import",
        "--ansible-inventory",
        "-",
        "--group",
        "etcd=k8s-etcd",
    ];
    args.extend(TLS);
    let out = etcdops(&fleet, &args, Some(&json));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&fleet).expect("fleet written");
    assert!(text.contains("name = \"k8s-etcd\""), "{text}");
    for (name, ip) in [
        ("etcd1", "192.0.2.11"),
        ("etcd2", "192.0.2.12"),
        ("etcd3", "192.0.2.13"),
    ] {
        assert!(
            text.contains(&format!("name = \"{name}\"\nagent = \"https://{ip}:9443\"")),
            "{name} at {ip}:\n{text}"
        );
    }
    // Without --group the kubespray group `etcd` is the cluster.
    let other = dir.path().join("fleet2.toml");
    let mut args = vec!["fleet", "import", "--ansible-inventory", "-"];
    args.extend(TLS);
    let out = etcdops(&other, &args, Some(&json));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("+ cluster etcd (group etcd)"),
        "{}",
        out.stdout
    );
}

#[test]
fn bad_inventories_exit_2_naming_the_group_or_host_and_leave_the_fleet_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = dir.path().join("fleet.toml");
    let json = ansible_list(&write(dir.path(), "hosts.ini", INI));
    let mut args = vec!["fleet", "import", "--ansible-inventory", "-"];
    args.extend(TLS);
    let out = etcdops(&fleet, &args, Some(&json));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let before = std::fs::read(&fleet).expect("fleet");

    let cases: [(&str, &str, &[&str], &str); 4] = [
        (
            "unknown group",
            INI,
            &["--group", "etcd_prod_c"],
            "no group \"etcd_prod_c\"",
        ),
        (
            "a host in two clusters",
            &format!("{INI}\n[etcd_prod_b]\nnode1\n"),
            &[],
            "host \"node1\" is in two clusters, \"etcd_prod_a\" and \"etcd_prod_b\"",
        ),
        (
            "a duplicate member name",
            &INI.replace("etcd_member_name=etcd2", "etcd_member_name=etcd1"),
            &[],
            "group \"etcd_prod_a\": hosts \"node1\" and \"node2\" both have member name \"etcd1\"",
        ),
        (
            "a missing address",
            &INI.replace("node3 ansible_host=10.0.0.3", "node3 ansible_host=\"\""),
            &[],
            "host \"node3\" (group \"etcd_prod_a\") has no address",
        ),
    ];
    for (what, inventory, extra, expect) in cases {
        let json = ansible_list(&write(dir.path(), "bad.ini", inventory));
        let mut args = vec!["fleet", "import", "--ansible-inventory", "-"];
        args.extend(extra);
        let out = etcdops(&fleet, &args, Some(&json));
        assert_eq!(out.code, 2, "{what}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(expect),
            "{what}: {:?} lacks {expect:?}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{what}: {}", out.stdout);
        assert_eq!(
            std::fs::read(&fleet).expect("fleet"),
            before,
            "{what}: the fleet file changed"
        );
    }
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_imported_fleet_reads_a_real_cluster() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ini = String::from("[etcdops_clusters:children]\nlive\n\n[live]\n");
    for m in &cluster.layout.members {
        let port = m.agent_url.rsplit(':').next().expect("port");
        ini.push_str(&format!(
            "host-{} ansible_host={} etcd_member_name={} etcdops_agent_port={port}\n",
            m.name, m.ip, m.name
        ));
    }
    let json = ansible_list(&write(dir.path(), "hosts.ini", &ini));
    let pki = &cluster.layout.pki_dir;
    let (ca, cert, key) = (
        pki.join("ca.crt"),
        pki.join("coordinator-sandbox-operator.crt"),
        pki.join("coordinator-sandbox-operator.key"),
    );
    assert!(
        ca.exists() && cert.exists() && key.exists(),
        "sandbox PKI layout: {}",
        pki.display()
    );
    let fleet = dir.path().join("fleet.toml");
    let out = etcdops(
        &fleet,
        &[
            "fleet",
            "import",
            "--ansible-inventory",
            "-",
            "--ca",
            ca.to_str().expect("utf-8"),
            "--cert",
            cert.to_str().expect("utf-8"),
            "--key",
            key.to_str().expect("utf-8"),
        ],
        Some(&json),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let status = etcdops(&fleet, &["status", "-w", "json"], None);
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    let report = status.json();
    assert_eq!(report["cluster"], "live");
    assert_eq!(report["healthy"], 3, "{report}");
}

/// The Ansible roles' sample inventory imports as the roles built it: the
/// three members, the spare (`etcdops_spare=true`) left out until `etcdops
/// member add` joins it.
#[test]
fn the_ansible_sample_inventory_imports_its_members_not_its_spare() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ansible/inventory/sample.ini");
    let json = ansible_list(&sample);
    let inv = write(dir.path(), "inv.json", &json);
    let fleet = dir.path().join("fleet.toml");
    let mut args = vec![
        "fleet",
        "import",
        "--ansible-inventory",
        inv.to_str().expect("utf-8"),
        "--dry-run",
    ];
    args.extend(TLS);
    let out = etcdops(&fleet, &args, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for name in ["etcd1", "etcd2", "etcd3"] {
        assert!(
            out.stdout.contains(&format!("+ etcd/{name} https://192.0.2.1")),
            "missing {name}:\n{}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.contains("etcd4"),
        "the spare was imported:\n{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("ops1"),
        "the coordinator was imported:\n{}",
        out.stdout
    );
}
