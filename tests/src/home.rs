//! The home etcd of `etcdops serve` with `[ha]` in end-to-end tests: a
//! harness cluster's member as the home, the fleet file naming it, and a
//! wait that prints the replicas' logs when it gives up.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcdops_coordinator::fleet::home::{HomeEtcd, HomeTls, JournalLocation};

use crate::Cluster;

/// `cluster`'s member `member` as the home etcd, keys under `prefix`, the
/// journal there.
pub fn home_of(cluster: &Cluster, member: usize, prefix: &str) -> HomeEtcd {
    HomeEtcd {
        endpoints: vec![cluster.layout.members[member].client_url.clone()],
        prefix: prefix.into(),
        journal: JournalLocation::Home,
        tls: cluster.layout.etcd_client.as_ref().map(|t| HomeTls {
            ca: t.ca.clone(),
            cert: t.cert.clone(),
            key: t.key.clone(),
        }),
    }
}

/// `operated`'s fleet file with a `[home]` table for `home` (journal
/// there), written beside it as `file_name`.
pub fn fleet_with_home(operated: &Cluster, home: &HomeEtcd, file_name: &str) -> PathBuf {
    let path = operated.fleet_path().with_file_name(file_name);
    let mut text = format!(
        "{}\n[home]\nendpoints = [{:?}]\nprefix = {:?}\njournal = \"home\"\n",
        std::fs::read_to_string(operated.fleet_path()).expect("fleet file"),
        home.endpoints[0],
        home.prefix,
    );
    if let Some(tls) = &home.tls {
        text.push_str(&format!(
            "[home.tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            tls.ca.display().to_string(),
            tls.cert.display().to_string(),
            tls.key.display().to_string(),
        ));
    }
    std::fs::write(&path, text).expect("writing the fleet file with [home]");
    path
}

/// Polls `cond` every 50 ms; panics with `logs()` after `limit`. How long it took.
pub fn wait_for(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
    logs: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}
