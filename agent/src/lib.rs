//! etcdops-agent: the only etcdops component that touches an etcd host.
//!
//! - [`config`]: the agent's TOML configuration.
//! - [`etcd`]: the one wrapper around the local etcd member.
//! - [`unit`]: how etcd runs (trait; process backend).
//! - [`envfile`]: etcd's environment file (`/etc/default/etcd`).
//! - [`datadir`]: the data dir's size and free space.
//! - [`disk`]: the fdatasync probe (on demand and periodic) and etcd's own disk metrics.
//! - [`host`]: facts about the host (CPUs, memory, load, uptime).
//! - [`metrics`]: the agent's own Prometheus `/metrics`.
//! - [`fence`]: one writer per cluster (fence epochs) and the record of completed calls.
//! - [`revisions`]: the member's revision sampled once a minute (RevisionAt).
//! - [`statefile`]: the agent's state dir and its atomic writes.
//! - [`rpc`]: the gRPC API, its authorisation (one table: RPC → role) and validation.
//! - [`audit`]: the audit trail: one JSON line per mutating or refused call, rotated by size.
//! - [`restore`]: staging a snapshot restore beside the data dir, swapping it in, rolling back.
//! - [`preflight`]: the checks before the agent starts (`--check-config`): config, TLS files, writable paths.
//! - [`certs`]: this host's certificates (files, served, the agent's own) and their replacement in place.
//! - [`certs_tls`]: the agent's TLS listener, with a certificate reloaded without a restart.
//! - [`server`]: start-up and shutdown.
//! - [`telemetry`]: logs and distributed traces (OpenTelemetry, the span of every RPC).
//! - [`notify`]: sd_notify (READY, STATUS, STOPPING, the watchdog) and the one way to start a child process.

#![forbid(unsafe_code)]

pub mod audit;
pub mod certs;
pub mod certs_tls;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod disk;
pub mod envfile;
pub mod etcd;
pub mod fence;
pub mod host;
pub mod metrics;
pub mod notify;
pub mod preflight;
pub mod restore;
pub mod revisions;
pub mod rpc;
pub mod server;
pub mod state;
pub mod statefile;
pub mod telemetry;
pub mod unit;
