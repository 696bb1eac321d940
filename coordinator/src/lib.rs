//! `etcdops`, the coordinator: reads every agent of a cluster and sequences cluster-wide etcd work.
//!
//! - [`cli`]: the command line (`etcdops ...`), the binary's only entry point.
//! - [`fleet`]: the fleet inventory (`fleet.toml`): clusters, members, agents, TLS.
//! - [`agents`]: the one place that connects to agents, and the concurrent fan-out.
//! - [`observe`]: reading every agent of a cluster into one [`plan::view::ClusterView`].
//! - [`plan`]: pure planners and the safety checks run before every step.
//! - [`exec`]: the one executor that runs plans (fence, checks, steps, journal).
//! - [`journal`]: the operation journal (redb).
//! - [`output`]: what commands print (tables and the stable JSON schema), as pure functions.
//! - [`snapshot`]: saving verified snapshots through agents; reading snapshot files.
//! - [`backup`]: backup sets in a directory or S3 bucket, listing and retention.
//! - [`sandbox`]: `etcdops sandbox up|down`, and the local-cluster layout the test harness shares.
//! - [`serve`]: `etcdops serve`, the scheduler: config, schedules, jobs, `/metrics`.
//! - [`telemetry`]: logs and distributed traces (OpenTelemetry; the trace context of agent calls).
//! - [`exit`]: the process exit codes.
//! - [`duration`]: humane durations on the command line (`5s`, `500ms`).
//! - [`units`]: byte sizes for people (`255 MB`), as etcdctl prints them.

#![forbid(unsafe_code)]

pub mod agents;
pub mod backup;
pub mod cli;
pub mod drill;
pub mod duration;
pub mod exec;
pub mod exit;
pub mod fleet;
pub mod journal;
pub mod observe;
pub mod output;
pub mod plan;
pub mod sandbox;
pub mod serve;
pub mod snapshot;
pub mod telemetry;
pub mod units;

pub use exit::ExitStatus;
