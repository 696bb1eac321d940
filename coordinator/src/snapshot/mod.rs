//! Snapshots: saving a verified snapshot through an agent (`save`), and
//! reading a snapshot file's status without etcd (`status`, `bbolt`).

pub mod bbolt;
pub mod save;
pub mod status;
