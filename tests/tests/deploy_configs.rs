//! The example configs shipped in deploy/ parse with the real parsers.

use std::path::Path;

#[test]
fn shipped_example_configs_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let agent = root.join("deploy/config/agent.toml");
    let config = etcdops_agent::config::AgentConfig::load(&agent).expect("deploy/config/agent.toml parses");
    assert_eq!(config.etcd.env_file, Path::new("/etc/default/etcd"));
    let fleet = root.join("deploy/config/fleet.toml");
    let fleet = etcdops_coordinator::fleet::Fleet::load(&fleet).expect("deploy/config/fleet.toml parses");
    assert_eq!(fleet.clusters[0].members.len(), 3);
}
