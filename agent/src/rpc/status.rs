//! GetStatus: the member, the unit, the data dir, the host, the latest
//! periodic disk probe, the backend quota, the fences and the agent itself.

use std::time::{Duration, UNIX_EPOCH};

use etcdops_proto::v1 as pb;

use crate::datadir::DataDirInfo;
use crate::disk::metrics::{QUOTA_BACKEND_BYTES, scrape_gauge};
use crate::disk::periodic::DiskHealth;
use crate::etcd::MemberStatus;
use crate::host::HostFacts;
use crate::state::AgentState;
use crate::unit::{UnitInfo, UnitState};

pub async fn get_status(state: &AgentState, timeout: Duration) -> pb::GetStatusResponse {
    let data_dir_path = state.data_dir.clone();
    let (member, unit, data_dir, quota, fences) = tokio::join!(
        state.etcd.status(timeout),
        state.unit.info(),
        tokio::task::spawn_blocking(move || DataDirInfo::read(&data_dir_path)),
        scrape_gauge(state.disk.metrics(), QUOTA_BACKEND_BYTES, timeout),
        state.fences.all(),
    );
    let member = match member {
        Ok(m) => {
            // 0 when the quota could not be read (the proto's convention).
            let quota = match quota {
                Ok(Some(bytes)) if bytes.is_finite() && bytes >= 0.0 => bytes as i64,
                Ok(_) => 0,
                Err(e) => {
                    tracing::debug!(error = %e, "reading etcd's backend quota");
                    0
                }
            };
            pb::MemberStatus {
                db_quota: quota,
                ..member_to_pb(state.etcd.endpoint(), m)
            }
        }
        Err(e) => pb::MemberStatus {
            reachable: false,
            error: e.to_string(),
            endpoint: state.etcd.endpoint().to_string(),
            ..Default::default()
        },
    };
    let data_dir = match data_dir {
        Ok(d) => data_dir_to_pb(d),
        Err(e) => pb::DataDirStatus {
            path: state.data_dir.display().to_string(),
            error: format!("measuring the data dir failed: {e}"),
            ..Default::default()
        },
    };
    let nearest = crate::certs::nearest(&state.cert_paths);
    pb::GetStatusResponse {
        agent: Some(pb::AgentInfo {
            name: state.identity.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            cert_not_after_unix: state
                .server_cert
                .as_ref()
                .and_then(|c| c.info())
                .map_or(state.identity.not_after_unix, |i| i.not_after_unix),
            nearest_cert: nearest.as_ref().map(|n| n.0.clone()).unwrap_or_default(),
            nearest_cert_not_after_unix: nearest.map_or(0, |n| n.1),
        }),
        member: Some(member),
        unit: Some(unit_to_pb(state.unit.backend(), state.unit.unit(), unit)),
        data_dir: Some(data_dir),
        host: Some(host_to_pb(state.host.read())),
        disk: state.disk_health.get().map(|d| disk_health_to_pb(&d)),
        fences: fences.into_iter().map(super::fence::record_to_pb).collect(),
    }
}

fn host_to_pb(h: HostFacts) -> pb::HostStatus {
    pb::HostStatus {
        hostname: h.hostname,
        cpus: h.cpus,
        memory_total_bytes: h.memory_total_bytes,
        memory_available_bytes: h.memory_available_bytes,
        load1: h.load1,
        load5: h.load5,
        load15: h.load15,
        uptime_secs: h.uptime_secs,
    }
}

fn disk_health_to_pb(d: &DiskHealth) -> pb::DiskHealth {
    let micros = |t: Duration| u64::try_from(t.as_micros()).unwrap_or(u64::MAX);
    let probed_at_unix = d
        .probed_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
    let (writes, p99_us, max_us, error) = match &d.outcome {
        Ok(r) => (r.writes, micros(r.p99), micros(r.max), String::new()),
        Err(e) => (0, 0, 0, e.clone()),
    };
    pb::DiskHealth {
        probed_at_unix,
        writes,
        p99_us,
        max_us,
        threshold_p99_us: micros(d.threshold),
        within_threshold: d.within_threshold(),
        error,
    }
}

fn member_to_pb(endpoint: &str, m: MemberStatus) -> pb::MemberStatus {
    pb::MemberStatus {
        db_quota: 0,
        reachable: true,
        error: String::new(),
        endpoint: endpoint.to_string(),
        member_id: m.member_id,
        member_name: m.member_name,
        cluster_id: m.cluster_id,
        leader_id: m.leader_id,
        is_leader: m.member_id != 0 && m.member_id == m.leader_id,
        is_learner: m.is_learner,
        raft_term: m.raft_term,
        raft_index: m.raft_index,
        raft_applied_index: m.raft_applied_index,
        revision: m.revision,
        db_size: m.db_size,
        db_size_in_use: m.db_size_in_use,
        etcd_version: m.version,
        alarms: m
            .alarms
            .into_iter()
            .map(|a| pb::Alarm {
                member_id: a.member_id,
                kind: a.kind,
            })
            .collect(),
        member_errors: m.errors,
        members: m
            .members
            .into_iter()
            .map(|x| pb::Member {
                id: x.id,
                name: x.name,
                peer_urls: x.peer_urls,
                client_urls: x.client_urls,
                is_learner: x.is_learner,
            })
            .collect(),
    }
}

pub(super) fn unit_to_pb(backend: &str, unit: String, info: UnitInfo) -> pb::UnitStatus {
    let state = match info.state {
        UnitState::Active => pb::UnitState::Active,
        UnitState::Inactive => pb::UnitState::Inactive,
        UnitState::Activating => pb::UnitState::Activating,
        UnitState::Deactivating => pb::UnitState::Deactivating,
        UnitState::Failed => pb::UnitState::Failed,
    };
    pb::UnitStatus {
        backend: backend.to_string(),
        unit,
        state: state as i32,
        main_pid: info.main_pid.unwrap_or_default(),
        detail: info.detail,
        sub_state: info.sub_state,
        last_log_lines: info.log_lines,
    }
}

fn data_dir_to_pb(d: DataDirInfo) -> pb::DataDirStatus {
    pb::DataDirStatus {
        path: d.path.display().to_string(),
        exists: d.exists,
        size_bytes: d.size_bytes,
        fs_free_bytes: d.fs_free_bytes,
        fs_total_bytes: d.fs_total_bytes,
        error: d.error.unwrap_or_default(),
        fs_inodes_total: d.fs_files,
        fs_inodes_free: d.fs_files_free,
        has_wal: d.has_wal,
        has_snap: d.has_snap,
        owner_uid: d.owner_uid,
        owner_gid: d.owner_gid,
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::disk::periodic::LightResult;

    #[test]
    fn disk_health_converts_figures_verdict_and_error() {
        let ok = DiskHealth {
            probed_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            threshold: Duration::from_millis(10),
            outcome: Ok(LightResult {
                writes: 100,
                p99: Duration::from_micros(2500),
                max: Duration::from_micros(4100),
            }),
        };
        let pb = disk_health_to_pb(&ok);
        assert_eq!(
            (
                pb.probed_at_unix,
                pb.writes,
                pb.p99_us,
                pb.max_us,
                pb.threshold_p99_us
            ),
            (1_800_000_000, 100, 2500, 4100, 10_000)
        );
        assert!(pb.within_threshold && pb.error.is_empty());
        let failed = DiskHealth {
            outcome: Err("No space left on device".into()),
            probed_at: SystemTime::UNIX_EPOCH,
            ..ok
        };
        let pb = disk_health_to_pb(&failed);
        assert!(
            !pb.within_threshold && pb.writes == 0 && pb.error.contains("No space"),
            "{pb:?}"
        );
    }
}
