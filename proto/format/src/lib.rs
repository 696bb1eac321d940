//! What both etcdops binaries read, and nothing heavy (no async runtime, no
//! gRPC, no D-Bus), so the coordinator shares it without linking the agent:
//!
//! - [`snapfile`]: etcd's snapshot file format, the database bytes and their
//!   sha256 trailer, checked over any chunking ([`snapfile::TrailerCheck`]).
//! - [`bbolt`]: a read-only reader of bbolt database files (etcd's backend
//!   and snapshots), with the consistency check `tx.Check()` runs.
//! - [`probe`]: the disk probe's request limits and defaults
//!   ([`probe::ProbeOptions`]), which the agent's probe enforces and the CLI
//!   validates its flags against.
//! - [`etcd_version`]: etcd's release numbers and what a release can do
//!   (the restore revision bump, the releases not to run in production).

#![forbid(unsafe_code)]

pub mod bbolt;
pub mod etcd_version;
pub mod probe;
pub mod snapfile;
