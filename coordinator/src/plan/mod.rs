//! Cluster operations as plans: pure planners over the observed cluster,
//! the safety checks run before every step, and the one executor.

pub mod rule;
