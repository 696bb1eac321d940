//! SetEtcdEnv and MoveDataDirAside: the agent's changes to etcd's files on
//! the host. Validation happens before anything is written; the data dir is
//! only ever renamed, and only while etcd is stopped.

use std::time::SystemTime;

use etcdops_proto::v1 as pb;
use tonic::Status;

use crate::datadir::{self, DataDirError};
use crate::envfile::{EnvFile, EnvFileError};
use crate::state::AgentState;
use crate::unit::UnitState;

fn env_status(e: EnvFileError) -> Status {
    match e {
        EnvFileError::InvalidValue { .. } | EnvFileError::InvalidKey { .. } => {
            Status::invalid_argument(e.to_string())
        }
        EnvFileError::Syntax { .. } => Status::failed_precondition(e.to_string()),
        EnvFileError::Read { .. } | EnvFileError::Write { .. } => Status::internal(e.to_string()),
    }
}

pub async fn set_env(
    state: &AgentState,
    request: pb::SetEtcdEnvRequest,
) -> Result<pb::SetEtcdEnvResponse, Status> {
    if request.set.is_empty() && request.unset.is_empty() {
        return Err(Status::invalid_argument(
            "set, unset: nothing to change; name at least one variable",
        ));
    }
    for key in request
        .set
        .iter()
        .map(|v| v.key.as_str())
        .chain(request.unset.iter().map(String::as_str))
    {
        if !key.starts_with("ETCD_") {
            return Err(Status::invalid_argument(format!(
                "set/unset: {key:?} is not an etcd variable; only ETCD_* variables are managed"
            )));
        }
    }
    let path = state.env_file.clone();
    let mut file = match EnvFile::load(&path) {
        Ok(f) => f,
        Err(EnvFileError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            EnvFile::default()
        }
        Err(e) => return Err(env_status(e)),
    };
    let before = file.to_text();
    for var in &request.set {
        file.set(&var.key, &var.value).map_err(env_status)?;
    }
    for key in &request.unset {
        file.remove(key);
    }
    let changed = file.to_text() != before;
    if changed {
        let to_save = file.clone();
        let target = path.clone();
        tokio::task::spawn_blocking(move || to_save.save(&target))
            .await
            .map_err(|e| Status::internal(format!("writing the env file: {e}")))?
            .map_err(env_status)?;
        tracing::info!(operation = %request.operation_id, path = %path.display(), "etcd environment file updated");
    }
    let mut previous = path.as_os_str().to_owned();
    previous.push(".prev");
    Ok(pb::SetEtcdEnvResponse {
        path: path.display().to_string(),
        previous_path: std::path::PathBuf::from(previous).display().to_string(),
        changed,
    })
}

pub async fn move_data_dir_aside(
    state: &AgentState,
    request: pb::MoveDataDirAsideRequest,
) -> Result<pb::MoveDataDirAsideResponse, Status> {
    let unit = state.unit.info().await;
    if matches!(
        unit.state,
        UnitState::Active | UnitState::Activating | UnitState::Deactivating
    ) {
        return Err(Status::failed_precondition(format!(
            "the data dir can only be moved aside while etcd is stopped; {} is {}: call StopEtcd first",
            state.unit.unit(),
            unit.state
        )));
    }
    let dir = state.data_dir.clone();
    let reason = request.reason.clone();
    let result = tokio::task::spawn_blocking(move || {
        let moved = datadir::move_aside(&dir, &reason, SystemTime::now())?;
        let kept = datadir::kept_copies(&dir)?;
        Ok::<_, DataDirError>((moved, kept))
    })
    .await
    .map_err(|e| Status::internal(format!("moving the data dir aside: {e}")))?;
    let (moved, kept) = result.map_err(|e| match e {
        DataDirError::InvalidReason { .. } => Status::invalid_argument(format!("reason: {e}")),
        DataDirError::Missing { .. }
        | DataDirError::NotADirectory { .. }
        | DataDirError::TargetExists { .. } => Status::failed_precondition(e.to_string()),
        _ => Status::internal(e.to_string()),
    })?;
    tracing::warn!(operation = %request.operation_id, moved_to = %moved.display(), "data dir moved aside");
    Ok(pb::MoveDataDirAsideResponse {
        moved_to: moved.display().to_string(),
        kept_copies: kept.into_iter().map(|k| k.path.display().to_string()).collect(),
    })
}
