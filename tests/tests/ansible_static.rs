//! Static checks of the Ansible roles in `deploy/ansible/` (no hosts needed):
//! the sample playbook passes `ansible-playbook --syntax-check`, the sample
//! inventory reads with `ansible-inventory --list` into the fleet it
//! describes, the files the roles template from it (agent.toml, fleet.toml)
//! parse with the real parsers, every variable a role uses is declared in its
//! `meta/argument_specs.yml` (grep level), only `ansible.builtin` modules are
//! used, and tasks touching keys are `no_log`.
//!
//! Needs ansible-core (2.19.14 from pip, `bash deploy/dev/setup.sh`): without
//! it these tests fail, naming that command; they never skip.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROLES: [&str; 3] = ["etcdops", "etcd_member", "etcdops_agent"];

fn ansible_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ansible")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Runs an ansible command in deploy/ansible; a missing ansible-core fails
/// the test with the command that installs it.
fn ansible(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(ansible_dir())
        // Ours, not an ansible.cfg of the machine running the tests.
        .env("ANSIBLE_CONFIG", ansible_dir().join("ansible.cfg"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_LOCAL_TEMP", std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}): ansible-core is not installed; run `bash deploy/dev/setup.sh` \
                 (it installs ansible-core 2.19.14 with pip)"
            )
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every file of a role (tasks, handlers, templates, defaults, vars).
fn role_files(role: &str) -> Vec<PathBuf> {
    let dir = ansible_dir().join("roles").join(role);
    let mut files = Vec::new();
    for sub in ["tasks", "handlers", "templates", "defaults", "vars"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries {
            files.push(e.expect("read_dir entry").path());
        }
    }
    files.sort();
    files
}

/// Words that look like variables of ours: `etcdops_*` and `etcd_*` not
/// preceded by a word character (internal facts start with `_`).
fn variables_in(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = (text[i..].starts_with("etcdops_") || text[i..].starts_with("etcd_"))
            && (i == 0 || !word(bytes[i - 1]));
        if starts {
            let end = (i..bytes.len()).find(|&j| !word(bytes[j])).unwrap_or(bytes.len());
            out.insert(text[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// The option names in a role's meta/argument_specs.yml (keys indented
/// under `options:`).
fn declared(role: &str) -> BTreeSet<String> {
    let path = ansible_dir()
        .join("roles")
        .join(role)
        .join("meta/argument_specs.yml");
    let text = read(&path);
    let mut in_options = false;
    let mut indent = None;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let this = line.len() - trimmed.len();
        if trimmed == "options:" {
            in_options = true;
            continue;
        }
        if !in_options || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let level = *indent.get_or_insert(this);
        if this == level
            && let Some(key) = trimmed.strip_suffix(':')
        {
            out.insert(key.to_string());
        }
    }
    assert!(!out.is_empty(), "{}: no options found", path.display());
    out
}

/// Top-level keys of a defaults file.
fn defaults(role: &str) -> BTreeSet<String> {
    let path = ansible_dir().join("roles").join(role).join("defaults/main.yml");
    read(&path)
        .lines()
        .filter(|l| !l.starts_with([' ', '#', '-']))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim().to_string()))
        .filter(|k| !k.is_empty())
        .collect()
}

/// Names that match the variable pattern but are not variables: the roles
/// and the inventory groups the roles read.
const NOT_VARIABLES: [&str; 4] = [
    "etcd_member",
    "etcdops_agent",
    "etcdops_coordinator",
    "etcdops_clusters",
];

#[test]
fn the_sample_playbook_passes_the_syntax_check() {
    let out = ansible(
        "ansible-playbook",
        &["-i", "inventory/sample.ini", "site.yml", "--syntax-check"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("playbook: site.yml"),
        "unexpected output:\n{stdout}"
    );
}

#[test]
fn the_sample_inventory_lists_a_coordinator_three_members_and_a_spare() {
    let out = ansible("ansible-inventory", &["-i", "inventory/sample.ini", "--list"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ansible-inventory prints JSON");
    let hosts = |group: &str| -> Vec<String> {
        json[group]["hosts"]
            .as_array()
            .unwrap_or_else(|| panic!("group {group} has no hosts in {json}"))
            .iter()
            .filter_map(|h| h.as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(hosts("etcdops_coordinator"), ["ops1"]);
    assert_eq!(hosts("etcd"), ["node1", "node2", "node3", "node4"]);
    let children = json["etcdops_clusters"]["children"]
        .as_array()
        .expect("etcdops_clusters children");
    assert_eq!(children, &[serde_json::json!("etcd")]);
    let hostvars = &json["_meta"]["hostvars"];
    for (host, name) in [
        ("node1", "etcd1"),
        ("node2", "etcd2"),
        ("node3", "etcd3"),
        ("node4", "etcd4"),
    ] {
        assert_eq!(
            hostvars[host]["etcd_member_name"], name,
            "{host}: {}",
            hostvars[host]
        );
    }
    assert_eq!(hostvars["node4"]["etcdops_spare"], "true");
}

/// The sample inventory through the roles' own templates and variables:
/// agent.toml for every etcd host and the coordinator's fleet file, read back
/// by the agent's and the CLI's parsers (the fleet has the three members, not
/// the spare).
/// Renders, with the roles' own defaults, variables and templates, every
/// cluster host's agent.toml (`agent-<host>.toml`) and the coordinator's
/// fleet file (`fleet.toml`) for an inventory, into a temp dir. Through two
/// throwaway roles linking the real defaults and vars (so the inventory
/// overrides the defaults as in a real run).
fn render(inventory: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out_dir = tmp.path().display().to_string();
    let roles = ansible_dir().join("roles");
    for (name, real, template, dest) in [
        (
            "render_agent",
            "etcdops_agent",
            "agent.toml.j2",
            "agent-{{ inventory_hostname }}.toml",
        ),
        ("render_fleet", "etcdops", "fleet.toml.j2", "fleet.toml"),
    ] {
        let dir = tmp.path().join("roles").join(name);
        for sub in ["defaults", "vars", "tasks"] {
            std::fs::create_dir_all(dir.join(sub)).expect("make the render role");
        }
        for sub in ["defaults", "vars"] {
            std::os::unix::fs::symlink(
                roles.join(real).join(sub).join("main.yml"),
                dir.join(sub).join("main.yml"),
            )
            .expect("link the real role's file");
        }
        let tasks = format!(
            "- ansible.builtin.template:\n    src: '{}'\n    dest: '{out_dir}/{dest}'\n    mode: '0644'\n",
            roles.join(real).join("templates").join(template).display()
        );
        std::fs::write(dir.join("tasks/main.yml"), tasks).expect("write the render role's tasks");
    }
    let playbook = "- hosts: etcd:etcdops_clusters\n  connection: local\n  gather_facts: false\n  roles: [render_agent]\n\
                    - hosts: etcdops_coordinator\n  connection: local\n  gather_facts: false\n  roles: [render_fleet]\n";
    let playbook_path = tmp.path().join("render.yml");
    std::fs::write(&playbook_path, playbook).expect("write the playbook");
    ansible(
        "ansible-playbook",
        &[
            "-i",
            &inventory.display().to_string(),
            "-e",
            // The local "hosts" run modules with the Python running Ansible.
            "ansible_python_interpreter={{ ansible_playbook_python }}",
            &playbook_path.display().to_string(),
        ],
    );
    tmp
}

/// A fleet file's clusters as (cluster, [(member, agent URL)]).
fn clusters_of(path: &Path) -> Vec<(String, Vec<(String, String)>)> {
    let fleet = etcdops_coordinator::fleet::Fleet::load(path)
        .unwrap_or_else(|e| panic!("the fleet file does not parse: {e}\n{}", read(path)));
    fleet
        .clusters
        .iter()
        .map(|c| {
            let members = c
                .members
                .iter()
                .map(|m| (m.name.clone(), m.agent.to_string()))
                .collect();
            (c.name.clone(), members)
        })
        .collect()
}

/// The sample inventory through the roles' own templates and variables:
/// agent.toml for every etcd host and the coordinator's fleet file, read back
/// by the agent's and the CLI's parsers (the fleet has the three members, not
/// the spare).
#[test]
fn the_templates_render_configs_the_binaries_accept() {
    let tmp = render(&ansible_dir().join("inventory/sample.ini"));
    for (host, name, ip) in [("node1", "etcd1", "192.0.2.11"), ("node4", "etcd4", "192.0.2.14")] {
        let path = tmp.path().join(format!("agent-{host}.toml"));
        let config = etcdops_agent::config::AgentConfig::load(&path)
            .unwrap_or_else(|e| panic!("{host}'s agent.toml does not parse: {e}\n{}", read(&path)));
        assert_eq!(config.listen.to_string(), format!("{ip}:7443"));
        assert_eq!(config.etcd.endpoint, format!("https://{ip}:2379"));
        assert_eq!(config.etcd.env_file, Path::new("/etc/default/etcd"));
        assert_eq!(config.unit.backend, etcdops_agent::config::Backend::Systemd);
        let tls = config.etcd.tls.expect("[etcd.tls]");
        assert_eq!(tls.key, Path::new("/etc/etcdops/pki/etcd-client.key"));
        assert_eq!(config.tls.key, Path::new("/etc/etcdops/pki/agent.key"));
        assert!(
            read(&path).contains(name),
            "{host}: the member name is in the header"
        );
    }

    let path = tmp.path().join("fleet.toml");
    let fleet = etcdops_coordinator::fleet::Fleet::load(&path)
        .unwrap_or_else(|e| panic!("the fleet file does not parse: {e}\n{}", read(&path)));
    assert_eq!(fleet.clusters.len(), 1);
    let cluster = &fleet.clusters[0];
    assert_eq!(cluster.name, "etcd");
    let members: Vec<(String, String)> = cluster
        .members
        .iter()
        .map(|m| (m.name.clone(), m.agent.to_string()))
        .collect();
    assert_eq!(
        members,
        [
            ("etcd1".to_string(), "https://192.0.2.11:7443".to_string()),
            ("etcd2".to_string(), "https://192.0.2.12:7443".to_string()),
            ("etcd3".to_string(), "https://192.0.2.13:7443".to_string()),
        ],
        "the spare etcd4 is not a member"
    );
    assert_eq!(fleet.tls.key, Path::new("/etc/etcdops/pki/coordinator-ops.key"));
}

/// Several clusters: children of [etcdops_clusters] listed in
/// etcdops_cluster_groups, with the identity variables overriding kubespray's
/// and Ansible's defaults.
#[test]
fn several_clusters_render_into_one_fleet_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let inventory = dir.path().join("fleet.ini");
    std::fs::write(
        &inventory,
        "[etcdops_coordinator]\nops ansible_host=10.0.0.1\n\n\
         [prod_a]\na1 ansible_host=10.0.1.11\na2 ansible_host=10.0.1.12 etcdops_agent_port=8443\n\
         a3 ansible_host=10.0.1.13 etcdops_spare=true\n\n\
         [prod_b]\nb1 ansible_host=10.0.2.11 etcd_member_name=kube1 etcdops_member_name=b-one\n\
         b2 ansible_host=10.0.2.12 etcdops_agent_url=https://b2.example:7443\n\n\
         [etcdops_clusters:children]\nprod_a\nprod_b\n\n\
         [all:vars]\netcdops_cluster_groups=[\"prod_a\", \"prod_b\"]\n",
    )
    .expect("write the inventory");
    let tmp = render(&inventory);
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        clusters_of(&tmp.path().join("fleet.toml")),
        [
            (
                "prod_a".to_string(),
                vec![
                    s("a1", "https://10.0.1.11:7443"),
                    s("a2", "https://10.0.1.12:8443")
                ]
            ),
            (
                "prod_b".to_string(),
                vec![
                    s("b-one", "https://10.0.2.11:7443"),
                    s("b2", "https://b2.example:7443")
                ]
            ),
        ]
    );
    let a2 =
        etcdops_agent::config::AgentConfig::load(&tmp.path().join("agent-a2.toml")).expect("a2's agent.toml");
    assert_eq!(a2.listen.to_string(), "10.0.1.12:8443");
    assert!(
        tmp.path().join("agent-a3.toml").exists(),
        "the spare gets an agent"
    );
}

#[test]
fn every_variable_a_role_uses_is_declared_in_its_argument_specs() {
    let mut problems = Vec::new();
    for role in ROLES {
        let specs = declared(role);
        for file in role_files(role) {
            let used = variables_in(&read(&file));
            for v in used {
                if !specs.contains(&v) && !NOT_VARIABLES.contains(&v.as_str()) {
                    problems.push(format!(
                        "{}: {v} is not in roles/{role}/meta/argument_specs.yml",
                        file.display()
                    ));
                }
            }
        }
        for d in defaults(role) {
            if !specs.contains(&d) {
                problems.push(format!(
                    "roles/{role}/defaults/main.yml: {d} is not in its argument_specs.yml"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "undeclared variables:\n{}",
        problems.join("\n")
    );
}

/// The variables every role derives the fleet from are the same file in
/// each role (roles/*/vars/main.yml).
#[test]
fn the_roles_share_one_fleet_derivation() {
    let roles = ansible_dir().join("roles");
    let first = read(&roles.join(ROLES[0]).join("vars/main.yml"));
    for role in &ROLES[1..] {
        assert_eq!(
            read(&roles.join(role).join("vars/main.yml")),
            first,
            "roles/{role}/vars/main.yml differs from roles/{}/vars/main.yml: copy it",
            ROLES[0]
        );
    }
}

/// Task keywords: every other key of a task must be an `ansible.builtin.` module.
const TASK_KEYWORDS: [&str; 24] = [
    "name",
    "when",
    "loop",
    "loop_control",
    "register",
    "changed_when",
    "failed_when",
    "until",
    "retries",
    "delay",
    "no_log",
    "notify",
    "delegate_to",
    "vars",
    "check_mode",
    "block",
    "always",
    "rescue",
    "become",
    "tags",
    "args",
    "environment",
    "ignore_errors",
    "listen",
];

/// The tasks of a tasks/handlers file, as (first line number, lines), split
/// at every `- name:` (blocks' inner tasks are tasks of their own).
fn tasks(text: &str) -> Vec<(usize, Vec<&str>)> {
    let mut out: Vec<(usize, Vec<&str>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("- name:") {
            out.push((n + 1, Vec::new()));
        }
        if let Some((_, lines)) = out.last_mut() {
            lines.push(line);
        }
    }
    out
}

#[test]
fn the_roles_use_only_ansible_builtin_modules_and_hide_keys() {
    let mut problems = Vec::new();
    let mut plays = vec![ansible_dir().join("site.yml")];
    for role in ROLES {
        for sub in ["tasks", "handlers"] {
            let dir = ansible_dir().join("roles").join(role).join(sub);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                plays.extend(entries.map(|e| e.expect("read_dir entry").path()));
            }
        }
    }
    for file in plays {
        let text = read(&file);
        for (line_no, lines) in tasks(&text) {
            let first = lines[0];
            let indent = first.len() - first.trim_start().len() + 2;
            let keys: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    // The task's own keys: at its indent (after the "- " on its first line).
                    let body = if i == 0 {
                        &l[indent..]
                    } else {
                        let trimmed = l.trim_start();
                        if l.len() - trimmed.len() != indent {
                            return None;
                        }
                        trimmed
                    };
                    if body.starts_with('#') || body.is_empty() {
                        return None;
                    }
                    body.split_once(':').map(|(k, _)| k.trim())
                })
                .collect();
            let is_play = keys.contains(&"hosts");
            for key in &keys {
                let ok = TASK_KEYWORDS.contains(key)
                    || key.starts_with("ansible.builtin.")
                    || (is_play && ["hosts", "gather_facts", "roles"].contains(key));
                if !ok {
                    problems.push(format!(
                        "{}:{line_no}: {key:?} is neither a task keyword nor an ansible.builtin module",
                        file.display()
                    ));
                }
            }
            // A slurp from a PKI dir reads keys; a copy of a key or of slurped content writes one.
            let touches_keys = (keys.contains(&"ansible.builtin.slurp")
                && lines.iter().any(|l| l.to_lowercase().contains("pki")))
                || (keys.contains(&"ansible.builtin.copy")
                    && lines
                        .iter()
                        .any(|l| l.contains(".key") || l.contains("b64decode")));
            if touches_keys && !lines.iter().any(|l| l.trim() == "no_log: true") {
                problems.push(format!(
                    "{}:{line_no}: a task reading or writing keys without no_log: true",
                    file.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_role_has_argument_specs_and_the_readme_names_every_variable() {
    let readme = read(&ansible_dir().join("README.md"));
    let mut missing = Vec::new();
    for role in ROLES {
        for v in declared(role) {
            if !readme.contains(&format!("`{v}`")) {
                missing.push(format!("{v} (role {role})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "deploy/ansible/README.md does not name: {}",
        missing.join(", ")
    );
}
