//! Cluster operations as plans: pure functions from an observed cluster to
//! steps, and the checks run before each. No agents, journal, wire types,
//! clock or filesystem here (`tests/tests/layering.rs` holds it to that); the
//! executor that runs plans is [`crate::exec`].
//!
//! - [`view`]: the cluster as observed (agents' status and health), plain data.
//! - [`rule`]: `--rule` expressions that choose which members to defragment.
//! - [`operation`]: what an operation is and carries (typed; the journal keeps it).
//! - [`planner`]: pure functions from a view to an ordered plan of steps.
//! - [`step`]: the steps, one enum per family (rolling, member, restore, recover).
//! - [`restore`]: the preflight and the shared initial cluster and token of a full restore (pure).
//! - [`safety`]: the checks run before every step (pure).
//! - [`certs`]: `certs renew`, one step per member (install, verify the served serials).
//! - [`rotate_ca`]: `certs rotate-ca`, three phases of rolling restarts (trust both CAs, new leaves, drop the old CA).
//! - [`membership`]: member add / remove / replace / promote plans and their preflight (pure).

pub mod certs;
pub mod membership;
pub mod operation;
pub mod planner;
pub mod recover;
pub mod restore;
pub mod rotate_ca;
pub mod rule;
pub mod safety;
pub mod step;
pub mod upgrade;
pub mod view;
