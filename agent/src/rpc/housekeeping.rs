//! PruneKeptCopies: housekeeping of the data dir's kept copies. The request
//! becomes a [`KeptPolicy`] and a protected list; `datadir::plan_prune`
//! (pure) decides; each removal re-checks the filesystem
//! (`datadir::remove_kept_copy`) and is logged at info with its path and
//! size. The newest copy, the copies the caller protects and the copy the
//! agent's last restore swap put aside (`restore-swaps.json`) are never removed.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use etcdops_proto::v1 as pb;
use tonic::Status;

use crate::datadir::{self, DataDirError, KeptPolicy};
use crate::state::AgentState;

/// The request as domain values: InvalidArgument names the field.
fn policy(request: &pb::PruneKeptCopiesRequest) -> Result<KeptPolicy, Status> {
    if request.keep == 0 && request.max_age_secs == 0 {
        return Err(Status::invalid_argument(
            "keep, max_age_secs: no retention rule; give a count to keep, a maximum age, or both",
        ));
    }
    Ok(KeptPolicy {
        keep: (request.keep > 0).then_some(request.keep as usize),
        max_age: (request.max_age_secs > 0).then(|| Duration::from_secs(request.max_age_secs)),
    })
}

fn status(e: DataDirError) -> Status {
    match e {
        DataDirError::Newest { .. } | DataDirError::NotKept { .. } => {
            Status::failed_precondition(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

pub async fn prune_kept_copies(
    state: &AgentState,
    request: pb::PruneKeptCopiesRequest,
) -> Result<pb::PruneKeptCopiesResponse, Status> {
    let policy = policy(&request)?;
    let data_dir = state.data_dir.clone();
    let state_dir = state.state_dir.clone();
    let operation = request.operation_id.clone();
    let dry_run = request.dry_run;
    let mut protected: Vec<(PathBuf, String)> = request
        .protect
        .iter()
        .map(|p| {
            (
                PathBuf::from(p),
                "an open or paused operation may still roll back to it".to_string(),
            )
        })
        .collect();
    let work = move || -> Result<pb::PruneKeptCopiesResponse, DataDirError> {
        if let Some((kept, staged)) = crate::restore::swap::latest_swap_kept(&state_dir, &data_dir) {
            protected.push((
                kept,
                format!(
                    "the last restore swapped in ({}) rolls back to it",
                    staged.display()
                ),
            ));
        }
        let copies = datadir::kept_copies(&data_dir)?;
        let verdicts = datadir::plan_prune(&copies, policy, SystemTime::now(), &protected);
        let mut out = pb::PruneKeptCopiesResponse {
            data_dir: data_dir.display().to_string(),
            dry_run,
            copies: Vec::new(),
            removed_bytes: 0,
        };
        for v in verdicts {
            let size = datadir::size_bytes(&v.copy.path);
            if v.remove {
                if dry_run {
                    tracing::info!(operation = %operation, path = %v.copy.path.display(), size_bytes = size, why = %v.why, "kept data dir copy would be removed (dry run)");
                } else {
                    datadir::remove_kept_copy(&data_dir, &v.copy.path)?;
                    tracing::info!(operation = %operation, path = %v.copy.path.display(), size_bytes = size, why = %v.why, "kept data dir copy removed");
                }
                out.removed_bytes = out.removed_bytes.saturating_add(size);
            } else {
                tracing::info!(operation = %operation, path = %v.copy.path.display(), size_bytes = size, why = %v.why, "kept data dir copy kept");
            }
            out.copies.push(pb::KeptCopyVerdict {
                path: v.copy.path.display().to_string(),
                reason: v.copy.reason,
                stamp: v.copy.stamp,
                size_bytes: size,
                remove: v.remove,
                why: v.why,
            });
        }
        Ok(out)
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("pruning kept copies: {e}")))?
        .map_err(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_a_rule_is_refused_naming_the_fields() {
        let err = policy(&pb::PruneKeptCopiesRequest::default()).expect_err("no rule");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("keep, max_age_secs"), "{err}");
        let p = policy(&pb::PruneKeptCopiesRequest {
            keep: 2,
            max_age_secs: 60,
            ..Default::default()
        })
        .expect("both");
        assert_eq!(p.keep, Some(2));
        assert_eq!(p.max_age, Some(Duration::from_secs(60)));
    }
}
