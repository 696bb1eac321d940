//! Snapshots: saving a verified snapshot through an agent (`save`), and
//! reading a snapshot file's status without etcd (`status`, with the bbolt
//! reader of `etcdops_format::bbolt`). Library code with plain parameters:
//! the command-line glue is `cli/snapshot.rs`.

pub mod save;
pub mod status;
