//! End-to-end: the agent's restore RPCs on a real 3-member cluster. A
//! snapshot taken with `etcdctl snapshot save` is streamed to one stopped
//! member's agent (StageRestore, a one-member initial cluster with a new
//! token), swapped in (the old data dir kept), rolled back, and the member
//! rejoins with its old data. Bad input: a flipped byte, a wrong size, no
//! header, no fence, a swap while etcd runs, a swap of a path that is not a
//! staged restore.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use etcdops_proto::v1::agent_client::AgentClient;
use etcdops_proto::v1::restore_chunk::Kind;
use etcdops_proto::v1::{
    Fence, RestoreChunk, RestoreHeader, RollBackRestoreRequest, StageRestoreResponse, SwapInRestoreRequest,
    UnitRequest,
};
use etcdops_tests::{Caller, Cluster, bins};
use tonic::transport::Channel;

const CHUNK: usize = 64 * 1024;

fn header(fence: Option<&Fence>, file: &[u8], name: &str, peer_url: &str) -> RestoreHeader {
    RestoreHeader {
        fence: fence.cloned(),
        size: file.len() as u64,
        // The database's sha256: the file less etcd's 32-byte trailer.
        sha256: sha256(&file[..file.len().saturating_sub(32)]),
        name: name.to_string(),
        initial_cluster: format!("{name}={peer_url}"),
        initial_cluster_token: "restore-e2e-token".to_string(),
        initial_advertise_peer_urls: peer_url.to_string(),
        bump_revision: 0,
    }
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Hex sha256 by coreutils' `sha256sum` (this crate has no hash of its own).
fn sha256(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("feeding sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

/// StageRestore with `header` (when given) then `file` in chunks.
fn stage(
    c: &Cluster,
    client: &mut AgentClient<Channel>,
    header: Option<RestoreHeader>,
    file: &[u8],
) -> Result<StageRestoreResponse, tonic::Status> {
    let mut chunks: Vec<RestoreChunk> = header
        .map(|h| RestoreChunk {
            kind: Some(Kind::Header(h)),
        })
        .into_iter()
        .collect();
    chunks.extend(file.chunks(CHUNK).map(|d| RestoreChunk {
        kind: Some(Kind::Data(d.to_vec())),
    }));
    c.block_on(client.stage_restore(tonic::codegen::tokio_stream::iter(chunks)))
        .map(tonic::Response::into_inner)
}

fn swap(
    c: &Cluster,
    client: &mut AgentClient<Channel>,
    fence: &Fence,
    staged: &str,
) -> Result<(String, String), tonic::Status> {
    let request = SwapInRestoreRequest {
        fence: Some(fence.clone()),
        staged_dir: staged.to_string(),
    };
    c.block_on(client.swap_in_restore(request)).map(|r| {
        let r = r.into_inner();
        (r.data_dir, r.previous_kept_as)
    })
}

fn unit(c: &Cluster, client: &mut AgentClient<Channel>, fence: &Fence, start: bool) {
    let request = UnitRequest {
        boot: false,
        operation_id: fence.operation_id.clone(),
        timeout_ms: 0,
        fence: Some(fence.clone()),
    };
    let result = if start {
        c.block_on(client.start_etcd(request))
    } else {
        c.block_on(client.stop_etcd(request))
    };
    result.unwrap_or_else(|e| {
        panic!(
            "{} etcd: {e:?}\n{}",
            if start { "starting" } else { "stopping" },
            c.logs()
        )
    });
}

/// Names in the data dir's parent that are not the data dir itself.
fn beside(data_dir: &Path) -> Vec<String> {
    let name = data_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    let mut names: Vec<String> = std::fs::read_dir(data_dir.parent().expect("parent"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != &name && n.contains(&name))
        .collect();
    names.sort();
    names
}

fn snapshot(c: &Cluster, dir: &Path) -> Vec<u8> {
    let path: PathBuf = dir.join("e2e.db");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", c.member(0).client_url))
        .args(c.etcdctl_tls_args())
        .arg("snapshot")
        .arg("save")
        .arg(&path)
        .output()
        .expect("running etcdctl snapshot save");
    assert!(
        out.status.success(),
        "etcdctl snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&path).expect("reading the snapshot")
}

#[test]
fn a_snapshot_is_staged_swapped_in_and_rolled_back_on_one_member() {
    let cluster = Cluster::builder().members(3).start(bins!());
    cluster.put_bulk("restore-e2e/", 50, 200);
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = snapshot(&cluster, tmp.path());
    assert_eq!(
        file.len() % 512,
        32,
        "etcd's snapshot file: pages plus the sha256 trailer"
    );

    let i = (cluster.leader() + 1) % 3;
    let m = cluster.member(i).clone();
    let member_id = cluster
        .get_status(i, &Caller::Coordinator, 2000)
        .expect("status")
        .member
        .expect("member")
        .member_id;
    let mut client = cluster.client(i, &Caller::Coordinator);
    let fence = cluster.acquire_fence("restore-e2e");
    let good = header(Some(&fence), &file, &m.name, &m.peer_url);

    // No fence, no header: refused before anything is written.
    let err = stage(
        &cluster,
        &mut client,
        Some(header(None, &file, &m.name, &m.peer_url)),
        &file,
    )
    .expect_err("no fence");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = stage(&cluster, &mut client, None, &file).expect_err("no header");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("header:"), "{}", err.message());
    let bad_cluster = RestoreHeader {
        initial_cluster: "other=http://127.0.0.1:1".to_string(),
        ..good.clone()
    };
    let err =
        stage(&cluster, &mut client, Some(bad_cluster), &file).expect_err("name not in initial cluster");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("initial_cluster:"), "{}", err.message());
    let bump = RestoreHeader {
        bump_revision: 1_000_000,
        ..good.clone()
    };
    let err = stage(&cluster, &mut client, Some(bump), &file).expect_err("etcdctl 3.4.23 cannot bump");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().starts_with(
            "etcdctl 3.4.23 cannot bump the revision on restore (etcdutl 3.5.10+ or etcdctl 3.4.27+ can)"
        ),
        "{}",
        err.message()
    );

    // Swapping in while etcd runs: refused.
    let staged_name = format!("{}.restore-{}", m.data_dir.display(), fence.operation_id);
    let err = swap(&cluster, &mut client, &fence, &staged_name).expect_err("etcd running");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("only while etcd is stopped"),
        "{}",
        err.message()
    );

    let running = RollBackRestoreRequest {
        fence: Some(fence.clone()),
        previous: format!("{}.pre-restore-20260101T000000Z", m.data_dir.display()),
    };
    let err = cluster
        .block_on(client.roll_back_restore(running))
        .expect_err("etcd running");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    unit(&cluster, &mut client, &fence, false);

    // A flipped byte: etcd's trailer no longer matches the bytes before it.
    let mut flipped = file.clone();
    flipped[file.len() / 2] ^= 0x40;
    let err = stage(&cluster, &mut client, Some(good.clone()), &flipped).expect_err("flipped byte");
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert!(
        err.message().contains("integrity check failed"),
        "{}",
        err.message()
    );
    // Intact in itself (its trailer recomputed), but not the snapshot the header names.
    let other = {
        let mut db = flipped[..flipped.len() - 32].to_vec();
        let digest = hex_decode(&sha256(&db));
        db.extend_from_slice(&digest);
        db
    };
    let err = stage(&cluster, &mut client, Some(good.clone()), &other).expect_err("another snapshot");
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert!(
        err.message().starts_with("sha256: expected "),
        "{}",
        err.message()
    );
    // Wrong sizes both ways.
    let short = RestoreHeader {
        size: file.len() as u64 - 1,
        ..good.clone()
    };
    let err = stage(&cluster, &mut client, Some(short), &file).expect_err("more bytes than size");
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert!(
        err.message().contains("more bytes than announced"),
        "{}",
        err.message()
    );
    let long = RestoreHeader {
        size: file.len() as u64 + 1,
        ..good.clone()
    };
    let err = stage(&cluster, &mut client, Some(long), &file).expect_err("fewer bytes than size");
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert!(err.message().starts_with(&format!(
        "size: expected {} bytes, got {}",
        file.len() + 1,
        file.len()
    )));
    assert_eq!(
        beside(&m.data_dir),
        Vec::<String>::new(),
        "no staged dir, no .part left"
    );

    // The real thing.
    let staged = stage(&cluster, &mut client, Some(good.clone()), &file).expect("StageRestore");
    eprintln!("StageRestore: {staged:?}");
    assert_eq!(staged.staged_dir, staged_name);
    assert_eq!(
        (staged.bytes, staged.sha256.as_str()),
        (file.len() as u64, good.sha256.as_str())
    );
    assert!(
        staged.tool.starts_with("etcdctl 3.4") || staged.tool.starts_with("etcdutl "),
        "{}",
        staged.tool
    );
    assert_eq!(
        beside(&m.data_dir),
        [format!(
            "{}.restore-{}",
            m.data_dir.file_name().expect("n").to_string_lossy(),
            fence.operation_id
        )],
        "the staged dir only: the .part copy is removed"
    );
    assert!(Path::new(&staged_name).join("member/wal").is_dir());

    // Swaps of anything but a staged restore beside the data dir: refused.
    for bad in [
        tmp.path().join("x.restore-y").display().to_string(),
        m.data_dir.display().to_string(),
        format!(
            "{}/../{}",
            m.data_dir.display(),
            m.data_dir.file_name().expect("n").to_string_lossy()
        ),
    ] {
        let err = swap(&cluster, &mut client, &fence, &bad).expect_err(&bad);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().starts_with("staged_dir:"), "{}", err.message());
    }

    let (data_dir, previous) =
        swap(&cluster, &mut client, &fence, &staged.staged_dir).expect("SwapInRestore");
    assert_eq!(data_dir, m.data_dir.display().to_string());
    let kept_prefix = format!("{}.pre-restore-", m.data_dir.display());
    assert!(previous.starts_with(&kept_prefix), "{previous}");
    assert!(
        Path::new(&previous).join("member/wal").is_dir(),
        "the old data dir is kept"
    );
    assert!(!Path::new(&staged_name).exists());
    // The restored member: one member, so etcd's v2 snapshot at term 1, index 1.
    assert!(
        m.data_dir
            .join("member/snap/0000000000000001-0000000000000001.snap")
            .is_file(),
        "{:?}",
        std::fs::read_dir(m.data_dir.join("member/snap")).map(|d| d.count())
    );
    assert_eq!(
        swap(&cluster, &mut client, &fence, &staged.staged_dir).expect("retried SwapInRestore"),
        (data_dir.clone(), previous.clone()),
        "a retry answers the same"
    );

    // Roll back: the old data dir back, the restored one kept.
    let bad = RollBackRestoreRequest {
        fence: Some(fence.clone()),
        previous: staged_name.clone(),
    };
    let err = cluster
        .block_on(client.roll_back_restore(bad))
        .expect_err("not a kept copy");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("previous:"), "{}", err.message());
    let request = RollBackRestoreRequest {
        fence: Some(fence.clone()),
        previous: previous.clone(),
    };
    let back = cluster
        .block_on(client.roll_back_restore(request))
        .expect("RollBackRestore")
        .into_inner();
    assert_eq!(back.data_dir, data_dir);
    assert!(
        back.replaced_kept_as
            .starts_with(&format!("{}.rolled-back-", m.data_dir.display())),
        "{back:?}"
    );
    assert!(
        Path::new(&back.replaced_kept_as)
            .join("member/snap/0000000000000001-0000000000000001.snap")
            .is_file()
    );
    assert!(!Path::new(&previous).exists());

    unit(&cluster, &mut client, &fence, true);
    cluster.wait_until(
        "the cluster healthy with the old member back",
        Duration::from_secs(60),
        |c| c.is_healthy(),
    );
    let after = cluster
        .get_status(i, &Caller::Coordinator, 2000)
        .expect("status")
        .member
        .expect("member");
    assert_eq!(
        after.member_id, member_id,
        "the member rejoined with its old identity"
    );
    cluster.release_fence(&fence);
}
