//! Why a step failed, in a type that says whether running it again is safe,
//! what was observed, and what the operator should do next.

use std::fmt;

use crate::agents::{AgentError, AgentErrorKind};

/// Whether the failed step may simply be run again (`etcdops op resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Safe: the action is idempotent under the step's key (an agent answers
    /// a repeated call from its record) or it did not start; what failed was
    /// reaching an agent or waiting for a condition.
    Safe,
    /// Look first: the cluster or a member is in a state a person must judge
    /// (a refusal, a difference between members, an unexpected answer).
    LookFirst,
}

/// A failed step: what was seen, whether a retry is safe, what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// What the executor observed, e.g. `etcd2 was not healthy and caught up in time: ...`.
    pub seen: String,
    pub retry: Retry,
    /// What the operator should do next; `None` for the generic advice of [`Retry`].
    pub next: Option<String>,
}

impl StepError {
    /// A failure after which running the step again is safe.
    pub fn retry(seen: impl Into<String>) -> StepError {
        StepError {
            seen: seen.into(),
            retry: Retry::Safe,
            next: None,
        }
    }

    /// A failure a person must look at before the step runs again.
    pub fn look_first(seen: impl Into<String>) -> StepError {
        StepError {
            seen: seen.into(),
            retry: Retry::LookFirst,
            next: None,
        }
    }

    /// The same failure with specific advice.
    pub fn next(mut self, next: impl Into<String>) -> StepError {
        self.next = Some(next.into());
        self
    }

    /// A failed call to `member`'s agent: transport failures and timeouts
    /// are safe to retry (the agent answers a repeated call under the same
    /// step key from its record); refusals and errors are not.
    pub fn from_agent(member: &str, e: &AgentError) -> StepError {
        let seen = e.to_string();
        match &e.kind {
            AgentErrorKind::Unreachable { .. }
            | AgentErrorKind::ConnectTimeout { .. }
            | AgentErrorKind::CallTimeout { .. }
            | AgentErrorKind::ConnectionClosed { .. } => StepError::retry(seen).next(format!(
                "bring {member}'s agent back (is etcdops-agent running, is its host up?), then `etcdops op resume`"
            )),
            AgentErrorKind::Rpc {
                code: tonic::Code::Unavailable | tonic::Code::DeadlineExceeded,
                ..
            } => StepError::retry(seen),
            _ => StepError::look_first(seen),
        }
    }

    /// What the operator should do next, specific or by [`Retry`].
    pub fn advice(&self) -> String {
        match (&self.next, self.retry) {
            (Some(next), _) => next.clone(),
            (None, Retry::Safe) => "the step is safe to run again once the cause is gone: `etcdops op resume`".into(),
            (None, Retry::LookFirst) => {
                "look at the member and the cluster (`etcdops status`) before `etcdops op resume` runs the step again"
                    .into()
            }
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.seen)
    }
}

impl std::error::Error for StepError {}

/// A bare description is a failure to look at first (not known to be safe to repeat).
impl From<String> for StepError {
    fn from(seen: String) -> StepError {
        StepError::look_first(seen)
    }
}

impl From<&str> for StepError {
    fn from(seen: &str) -> StepError {
        StepError::look_first(seen)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn agent_error(kind: AgentErrorKind) -> AgentError {
        AgentError {
            member: "etcd2".into(),
            agent: crate::fleet::AgentUrl::parse("https://127.0.0.2:7443").expect("url"),
            kind,
        }
    }

    #[test]
    fn transport_failures_are_safe_to_retry_refusals_are_not() {
        let e = StepError::from_agent(
            "etcd2",
            &agent_error(AgentErrorKind::CallTimeout {
                after: Duration::from_secs(5),
            }),
        );
        assert_eq!(e.retry, Retry::Safe);
        assert!(e.advice().contains("etcd2's agent"), "{}", e.advice());
        let e = StepError::from_agent(
            "etcd2",
            &agent_error(AgentErrorKind::Rpc {
                code: tonic::Code::FailedPrecondition,
                message: "fence held by op-1".into(),
            }),
        );
        assert_eq!(e.retry, Retry::LookFirst);
        assert!(e.advice().contains("etcdops status"));
        let e = StepError::from_agent(
            "etcd2",
            &agent_error(AgentErrorKind::Rpc {
                code: tonic::Code::Unavailable,
                message: String::new(),
            }),
        );
        assert_eq!(e.retry, Retry::Safe);
    }

    #[test]
    fn a_bare_description_is_to_be_looked_at() {
        let e: StepError = "hashkv differs".into();
        assert_eq!(e.retry, Retry::LookFirst);
        assert_eq!(e.to_string(), "hashkv differs");
        let e = StepError::retry("not caught up in time").next("check etcd2's disk");
        assert_eq!(e.advice(), "check etcd2's disk");
    }
}
