//! Cluster operations as plans.
//!
//! - [`view`]: the cluster as observed (agents' status and health), plain data.
//! - [`rule`]: `--rule` expressions that choose which members to defragment.
//! - [`planner`]: pure functions from a view to an ordered plan of steps.
//! - [`restore`]: the preflight and the shared initial cluster and token of a full restore (pure; not run yet).
//! - [`safety`]: the checks run before every step (pure).
//! - [`membership`]: member add / remove / replace / promote plans and their preflight (pure).
//! - [`fence`]: taking and releasing the cluster's fence on every agent.
//! - [`executor`]: the one executor: checks, acts, waits, journals.

pub mod executor;
pub mod fence;
pub mod member_steps;
pub mod membership;
pub mod planner;
pub mod recover;
pub mod recover_steps;
pub mod restore;
pub mod restore_steps;
pub mod rule;
pub mod safety;
pub mod view;
