//! AddMember, RemoveMember, PromoteMember: etcd membership changes through
//! the local member (fenced by the caller, see `rpc::fence::fenced`). Each
//! is idempotent: the membership is read first, and nothing to do (peer URL
//! already a member, ID already gone, already a voter) answers
//! `changed: false`. etcd's transient refusals (the strict reconfiguration
//! check, a learner not yet in sync) are retried with a backoff within the
//! request's budget; other errors go through `maintenance::etcd_status`.

use std::time::{Duration, Instant};

use etcdops_proto::v1 as pb;
use tonic::Status;

use super::maintenance::{Budget, etcd_status};
use crate::envfile::{EnvFileError, validate_var};
use crate::etcd::{EtcdError, MemberInfo, MemberRefusal};
use crate::state::AgentState;

pub const ADD_MEMBER: Budget = Budget {
    default_ms: 30_000,
    max_ms: 600_000,
};
pub const REMOVE_MEMBER: Budget = Budget {
    default_ms: 30_000,
    max_ms: 600_000,
};
pub const PROMOTE_MEMBER: Budget = Budget {
    default_ms: 60_000,
    max_ms: 600_000,
};

/// The first wait between attempts, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// `peer_urls` of an AddMemberRequest: at least one, each `http(s)://host:port`.
pub fn peer_urls(urls: &[String]) -> Result<Vec<String>, Status> {
    if urls.is_empty() {
        return Err(Status::invalid_argument(
            "peer_urls: required: the new member's peer URLs, e.g. http://10.0.0.14:2380",
        ));
    }
    for (i, url) in urls.iter().enumerate() {
        match validate_var("ETCD_INITIAL_ADVERTISE_PEER_URLS", url) {
            Ok(()) if !url.contains(',') => {}
            Ok(()) => {
                return Err(Status::invalid_argument(format!(
                    "peer_urls[{i}]: {url:?} holds several URLs; give one URL per entry"
                )));
            }
            Err(EnvFileError::InvalidValue { reason, .. }) => {
                return Err(Status::invalid_argument(format!("peer_urls[{i}]: {reason}")));
            }
            Err(e) => return Err(Status::invalid_argument(format!("peer_urls[{i}]: {e}"))),
        }
    }
    Ok(urls.to_vec())
}

/// `member_id` of a Remove/PromoteMemberRequest: required.
pub fn member_id(id: u64) -> Result<u64, Status> {
    if id == 0 {
        return Err(Status::invalid_argument(
            "member_id: required: the member's ID (hex in `etcdops member list`, as a number here)",
        ));
    }
    Ok(id)
}

/// The waits between attempts: 200 ms, doubling, at most 2 s.
#[derive(Debug, Clone)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: FIRST_BACKOFF }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        delay
    }
}

/// Whether etcd may agree if asked again later.
fn transient(e: &EtcdError) -> bool {
    matches!(e, EtcdError::MemberRefused { refusal, .. } if refusal.transient())
}

/// Whether `e` is `refusal`.
fn refused(e: &EtcdError, refusal: MemberRefusal) -> bool {
    matches!(e, EtcdError::MemberRefused { refusal: r, .. } if *r == refusal)
}

/// Asks etcd through `attempt` (given the budget left) until it agrees,
/// refuses for good, or a transient refusal outlasts `deadline`. Returns the
/// last answer and how many times etcd was asked.
async fn retried<T, F, Fut>(what: &str, deadline: Instant, mut attempt: F) -> (Result<T, EtcdError>, u32)
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, EtcdError>>,
{
    let mut backoff = Backoff::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        // On the heap: etcd-client futures are large (see etcd.rs).
        let result = Box::pin(attempt(remaining)).await;
        match &result {
            Err(e) if transient(e) => {
                let delay = backoff.next_delay();
                if Instant::now() + delay >= deadline {
                    return (result, attempts);
                }
                tracing::info!(attempt = attempts, error = %e, ?delay, "etcd refused {what} for now; asking again");
                tokio::time::sleep(delay).await;
            }
            _ => return (result, attempts),
        }
    }
}

/// An error after `attempts` tries: the one mapping, plus how often etcd was asked.
fn gave_up(e: EtcdError, attempts: u32, budget: Duration) -> Status {
    let status = etcd_status(e);
    if attempts <= 1 {
        return status;
    }
    Status::new(
        status.code(),
        format!(
            "{} (etcd asked {attempts} times within {budget:?})",
            status.message()
        ),
    )
}

fn member_to_pb(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_urls: m.peer_urls,
        client_urls: m.client_urls,
        is_learner: m.is_learner,
    }
}

fn response(
    member_id: u64,
    members: Vec<MemberInfo>,
    attempts: u32,
    changed: bool,
) -> pb::MembershipResponse {
    pb::MembershipResponse {
        member_id,
        members: members.into_iter().map(member_to_pb).collect(),
        attempts,
        changed,
    }
}

/// The member that has one of `urls` as a peer URL.
fn with_peer_url<'a>(members: &'a [MemberInfo], urls: &[String]) -> Option<&'a MemberInfo> {
    members
        .iter()
        .find(|m| m.peer_urls.iter().any(|p| urls.contains(p)))
}

async fn list(state: &AgentState, deadline: Instant) -> Result<Vec<MemberInfo>, Status> {
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(500));
    Box::pin(state.etcd.member_list(remaining))
        .await
        .map_err(etcd_status)
}

pub async fn add_member(
    state: &AgentState,
    urls: Vec<String>,
    learner: bool,
    timeout: Duration,
) -> Result<pb::MembershipResponse, Status> {
    let deadline = Instant::now() + timeout;
    let members = list(state, deadline).await?;
    if let Some(m) = with_peer_url(&members, &urls) {
        tracing::info!(member = %format!("{:x}", m.id), ?urls, "AddMember: the peer URL is a member already");
        return Ok(response(m.id, members, 0, false));
    }
    let (result, attempts) = retried("the member add", deadline, |remaining| {
        state.etcd.member_add(&urls, learner, remaining)
    })
    .await;
    match result {
        Ok(change) => {
            let id = change.member.as_ref().map(|m| m.id).unwrap_or_default();
            tracing::warn!(member = %format!("{id:x}"), ?urls, learner, attempts, "member added");
            Ok(response(id, change.members, attempts, true))
        }
        // Added meanwhile (e.g. by an earlier call whose answer was lost).
        Err(e) if refused(&e, MemberRefusal::PeerUrlExists) => {
            let members = list(state, deadline).await?;
            match with_peer_url(&members, &urls) {
                Some(m) => Ok(response(m.id, members.clone(), attempts, false)),
                None => Err(gave_up(e, attempts, timeout)),
            }
        }
        Err(e) => Err(gave_up(e, attempts, timeout)),
    }
}

pub async fn remove_member(
    state: &AgentState,
    id: u64,
    timeout: Duration,
) -> Result<pb::MembershipResponse, Status> {
    let deadline = Instant::now() + timeout;
    let members = list(state, deadline).await?;
    if !members.iter().any(|m| m.id == id) {
        tracing::info!(member = %format!("{id:x}"), "RemoveMember: not a member (already removed)");
        return Ok(response(id, members, 0, false));
    }
    let (result, attempts) = retried("the member removal", deadline, |remaining| {
        state.etcd.member_remove(id, remaining)
    })
    .await;
    match result {
        Ok(change) => {
            tracing::warn!(member = %format!("{id:x}"), attempts, "member removed");
            Ok(response(id, change.members, attempts, true))
        }
        Err(e) if refused(&e, MemberRefusal::MemberNotFound) => {
            Ok(response(id, list(state, deadline).await?, attempts, false))
        }
        Err(e) => Err(gave_up(e, attempts, timeout)),
    }
}

pub async fn promote_member(
    state: &AgentState,
    id: u64,
    timeout: Duration,
) -> Result<pb::MembershipResponse, Status> {
    let deadline = Instant::now() + timeout;
    let members = list(state, deadline).await?;
    match members.iter().find(|m| m.id == id) {
        None => {
            return Err(Status::not_found(format!(
                "member_id: {id:x} is not a member of the cluster (members: {})",
                members
                    .iter()
                    .map(|m| format!("{:x}", m.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Some(m) if !m.is_learner => {
            tracing::info!(member = %format!("{id:x}"), "PromoteMember: a voter already");
            return Ok(response(id, members, 0, false));
        }
        Some(_) => {}
    }
    let (result, attempts) = retried("the promotion", deadline, |remaining| {
        state.etcd.member_promote(id, remaining)
    })
    .await;
    match result {
        Ok(change) => {
            tracing::warn!(member = %format!("{id:x}"), attempts, "learner promoted to voter");
            Ok(response(id, change.members, attempts, true))
        }
        // Promoted meanwhile.
        Err(e) if refused(&e, MemberRefusal::NotALearner) => {
            Ok(response(id, list(state, deadline).await?, attempts, false))
        }
        Err(e) => Err(gave_up(e, attempts, timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_validated() {
        let urls = |list: &[&str]| list.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        assert_eq!(
            peer_urls(&urls(&["http://10.0.0.4:2380"])).expect("ok"),
            urls(&["http://10.0.0.4:2380"])
        );
        assert!(peer_urls(&urls(&["https://[fd00::4]:2380", "http://h4:2380"])).is_ok());
        let cases: [(&[&str], &str); 5] = [
            (&[], "peer_urls: required"),
            (&["10.0.0.4:2380"], "peer_urls[0]: "),
            (&["http://10.0.0.4:2380", "ftp://h:2380"], "peer_urls[1]: "),
            (&["http://10.0.0.4"], "peer_urls[0]: "),
            (&["http://a:2380,http://b:2380"], "peer_urls[0]: "),
        ];
        for (list, prefix) in cases {
            let err = peer_urls(&urls(list)).expect_err("invalid");
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().starts_with(prefix), "{list:?}: {}", err.message());
        }
        assert!(
            member_id(0)
                .expect_err("0")
                .message()
                .starts_with("member_id: required")
        );
        assert_eq!(member_id(7).expect("ok"), 7);
    }

    #[test]
    fn backoff_doubles_up_to_two_seconds() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 2000, 2000, 2000]);
    }

    fn refusal(message: &str) -> EtcdError {
        EtcdError::MemberRefused {
            endpoint: "http://e:2379".into(),
            refusal: MemberRefusal::classify(message).expect("known refusal"),
            message: message.into(),
        }
    }

    #[test]
    fn only_transient_refusals_are_retried() {
        assert!(transient(&refusal("etcdserver: unhealthy cluster")));
        assert!(transient(&refusal(
            "etcdserver: can only promote a learner member which is in sync with leader"
        )));
        for message in [
            "etcdserver: can only promote a learner member",
            "etcdserver: too many learner members in cluster",
            "etcdserver: Peer URLs already exists",
            "etcdserver: member not found",
            "etcdserver: re-configuration failed due to not enough started members",
        ] {
            assert!(!transient(&refusal(message)), "{message}");
        }
        assert!(!transient(&EtcdError::Timeout {
            endpoint: "e".into(),
            timeout: Duration::from_secs(1)
        }));
    }

    #[tokio::test]
    async fn retries_until_etcd_agrees_or_the_budget_ends() {
        let mut answers = vec![
            Err(refusal("etcdserver: unhealthy cluster")),
            Err(refusal("etcdserver: unhealthy cluster")),
            Ok(7),
        ]
        .into_iter();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (result, attempts) = retried("x", deadline, |_| {
            std::future::ready(answers.next().expect("asked too often"))
        })
        .await;
        assert_eq!((result.expect("agreed"), attempts), (7, 3));

        let started = Instant::now();
        let deadline = started + Duration::from_secs(1);
        let (result, attempts) = retried("x", deadline, |_| {
            std::future::ready(Err::<(), _>(refusal("etcdserver: unhealthy cluster")))
        })
        .await;
        assert!(result.is_err());
        // 200 + 400 ms waited; the next 800 ms would pass the deadline.
        assert_eq!(attempts, 3);
        assert!(started.elapsed() < Duration::from_secs(1));
        let status = gave_up(result.expect_err("refused"), attempts, Duration::from_secs(1));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("asked 3 times"), "{}", status.message());

        let (result, attempts) = retried("x", deadline, |_| {
            std::future::ready(Err::<(), _>(refusal("etcdserver: member not found")))
        })
        .await;
        assert!(refused(
            &result.expect_err("refused"),
            MemberRefusal::MemberNotFound
        ));
        assert_eq!(attempts, 1);
    }
}
