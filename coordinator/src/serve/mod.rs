//! `etcdops serve` (issue 15). Placeholder until the serve skeleton is merged.

pub mod ha;
