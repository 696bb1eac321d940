//! `ansible-playbook` of `deploy/ansible/site.yml` over SSH against nspawn
//! hosts ([`crate::nspawn::AgentSetup::Bare`]), as an operator runs it:
//! the repository's `ansible.cfg` (`ANSIBLE_CONFIG`), root over SSH with a
//! key pair generated per run in a temp dir and authorised on every host,
//! host keys not checked (`StrictHostKeyChecking=no`,
//! `UserKnownHostsFile=/dev/null`: the test's own throwaway hosts only), SSH
//! control sockets in the temp dir. [`Ansible::playbook`] returns the output
//! and the PLAY RECAP per host.
//!
//! Needs `ansible-playbook` (ansible-core 2.19.14, `bash deploy/dev/setup.sh`)
//! and `ssh`/`ssh-keygen`; a missing one fails the test naming that command.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::nspawn::NspawnCluster;

/// How long one playbook run may take before it is killed.
const PLAYBOOK_TIMEOUT: Duration = Duration::from_secs(600);

/// A key pair authorised on the hosts, and where inventories and logs go.
pub struct Ansible {
    dir: tempfile::TempDir,
    key: PathBuf,
    runs: usize,
}

/// One host's line of the PLAY RECAP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recap {
    pub ok: u32,
    pub changed: u32,
    pub unreachable: u32,
    pub failed: u32,
    pub skipped: u32,
    pub rescued: u32,
    pub ignored: u32,
}

/// A finished `ansible-playbook` run.
#[derive(Debug, Clone)]
pub struct PlaybookRun {
    /// The exit status (-1 when killed by a signal).
    pub code: i32,
    /// stdout and stderr, interleaved.
    pub output: String,
    /// The PLAY RECAP, by inventory hostname.
    pub recap: BTreeMap<String, Recap>,
    pub elapsed: Duration,
}

impl PlaybookRun {
    /// Panics, with the output, unless the run succeeded with every host in
    /// `hosts` reachable and none failed.
    pub fn assert_ok(&self, what: &str, hosts: &[&str]) {
        let bad = hosts.iter().any(|h| {
            self.recap
                .get(*h)
                .is_none_or(|r| r.failed > 0 || r.unreachable > 0)
        });
        assert!(
            self.code == 0 && !bad,
            "{what}: ansible-playbook exited {} (recap {:?}):\n{}",
            self.code,
            self.recap,
            self.output
        );
    }

    /// The hosts whose recap says `changed` > 0, with their count.
    pub fn changed(&self) -> BTreeMap<String, u32> {
        self.recap
            .iter()
            .filter(|(_, r)| r.changed > 0)
            .map(|(h, r)| (h.clone(), r.changed))
            .collect()
    }
}

impl Ansible {
    /// Generates an ed25519 key pair and authorises it for root on every
    /// host of `cluster`.
    pub fn new(cluster: &NspawnCluster) -> Ansible {
        let dir = tempfile::Builder::new()
            .prefix("etcdops-ansible-")
            .tempdir_in("/var/tmp")
            .expect("temp dir");
        let key = dir.path().join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "etcdops-ansible-e2e", "-f"])
            .arg(&key)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run ssh-keygen ({e}): install openssh-client (deploy/dev/setup.sh)")
            });
        assert!(
            out.status.success(),
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("the public key");
        for i in 0..cluster.layout.members.len() {
            cluster.write_in_host(i, "/root/.ssh/authorized_keys", &public);
            cluster.script_ok(
                i,
                "chmod 0700 /root/.ssh && chmod 0600 /root/.ssh/authorized_keys",
            );
        }
        Ansible { dir, key, runs: 0 }
    }

    /// The private key (`ansible_ssh_private_key_file`).
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// Writes `text` as the inventory the next runs use.
    pub fn write_inventory(&self, text: &str) {
        std::fs::write(self.inventory(), text).expect("writing the inventory");
    }

    fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.ini")
    }

    /// Runs `ansible-playbook -i <inventory> site.yml ARGS` in
    /// `deploy/ansible` with its `ansible.cfg`; killed after
    /// [`PLAYBOOK_TIMEOUT`].
    pub fn playbook(&mut self, args: &[&str]) -> PlaybookRun {
        let ansible_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ansible");
        self.runs += 1;
        let log_path = self.dir.path().join(format!("run-{}.log", self.runs));
        let log = File::create(&log_path).expect("the playbook log");
        let control = self.dir.path().join("cp");
        std::fs::create_dir_all(&control).expect("the control path dir");
        let started = Instant::now();
        // Output into a file: ssh control masters outliving the run never
        // hold a pipe of ours open.
        let mut child = Command::new("ansible-playbook")
            .arg("-i")
            .arg(self.inventory())
            .arg("site.yml")
            .args(args)
            .current_dir(&ansible_dir)
            .env("ANSIBLE_CONFIG", ansible_dir.join("ansible.cfg"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env_remove("ANSIBLE_FORCE_COLOR")
            .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("tmp"))
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", &control)
            .env("ANSIBLE_PRIVATE_KEY_FILE", &self.key)
            .env(
                "ANSIBLE_SSH_COMMON_ARGS",
                "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            )
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
            // Ansible's own log: every line timestamped (where the time goes).
            .env("ANSIBLE_LOG_PATH", self.dir.path().join(format!("run-{}.timed.log", self.runs)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the playbook log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run ansible-playbook ({e}): install ansible-core 2.19.14 with `bash deploy/dev/setup.sh`"
                )
            });
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for ansible-playbook") {
                break status;
            }
            if started.elapsed() > PLAYBOOK_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ansible-playbook {args:?} still running after {PLAYBOOK_TIMEOUT:?}; killed:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        PlaybookRun {
            code: status.code().unwrap_or(-1),
            recap: parse_recap(&output),
            output,
            elapsed: started.elapsed(),
        }
    }
}

/// The PLAY RECAP lines: `host : ok=N changed=N unreachable=N failed=N ...`.
pub fn parse_recap(output: &str) -> BTreeMap<String, Recap> {
    let mut recap = BTreeMap::new();
    let Some(start) = output.rfind("PLAY RECAP") else {
        return recap;
    };
    for line in output[start..].lines().skip(1) {
        let Some((host, counts)) = line.split_once(" : ") else {
            if line.trim().is_empty() {
                break;
            }
            continue;
        };
        let mut r = Recap::default();
        for field in counts.split_whitespace() {
            let Some((name, value)) = field.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse::<u32>() else { continue };
            match name {
                "ok" => r.ok = value,
                "changed" => r.changed = value,
                "unreachable" => r.unreachable = value,
                "failed" => r.failed = value,
                "skipped" => r.skipped = value,
                "rescued" => r.rescued = value,
                "ignored" => r.ignored = value,
                _ => {}
            }
        }
        recap.insert(host.trim().to_string(), r);
    }
    recap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_recap_reads_every_host() {
        let out = "TASK [x] ***\nok: [a]\n\nPLAY RECAP *********\n\
                   node1                      : ok=30   changed=2    unreachable=0    failed=0    skipped=9    rescued=0    ignored=0   \n\
                   ops1                       : ok=12   changed=0    unreachable=1    failed=1    skipped=4    rescued=0    ignored=0   \n\n";
        let recap = parse_recap(out);
        assert_eq!(recap.len(), 2);
        assert_eq!(
            recap["node1"],
            Recap {
                ok: 30,
                changed: 2,
                skipped: 9,
                ..Recap::default()
            }
        );
        assert_eq!(recap["ops1"].unreachable, 1);
        assert_eq!(recap["ops1"].failed, 1);
        assert!(parse_recap("no recap").is_empty());
    }
}
