//! End-to-end: a member whose graceful stop hangs is never left stopped
//! (issue 12, part 8). The agent kills etcd after `[unit] stop_timeout_secs`
//! and, for a restart, starts it again; the work runs to its end whatever
//! happens to the call, and a retry of the same step gets its outcome.
//!
//! How the stop is made to hang: the testbed notes suggest half-blackholing
//! the member's peer port with iptables on loopback, but here (etcd 3.4.23)
//! neither direction made etcd's graceful stop hang: a follower exited within
//! 1-3 s either way, and the blackholed member turned unhealthy, so a rolling
//! restart refused to start. Instead, [`HungStop`] attaches gdb to the
//! member's etcd and has it swallow SIGTERM (`handle SIGTERM nopass`): etcd
//! keeps serving and never begins its graceful stop, as a stop hung on a
//! dead peer looks from outside; SIGKILL cannot be intercepted. gdb exits
//! with its tracee, and is killed by the guard's Drop on every other path.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcdops_proto::v1::{Fence, UnitRequest, UnitState};
use etcdops_tests::{Caller, Cluster, bins};
use tonic::Code;

/// etcd's graceful stop in these tests (`[unit] stop_timeout_secs`).
const STOP_TIMEOUT_SECS: u64 = 2;

/// gdb attached to one etcd, swallowing SIGTERM; detached (killed) on drop.
struct HungStop {
    gdb: Child,
}

impl HungStop {
    fn attach(pid: u32) -> HungStop {
        let gdb = Command::new("gdb")
            .args([
                "-p",
                &pid.to_string(),
                "-batch",
                "-nx",
                "-iex",
                "set auto-load off",
            ])
            .args(["-ex", "handle all nostop noprint pass"])
            .args(["-ex", "handle SIGTERM nostop noprint nopass"])
            .args(["-ex", "continue"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gdb (apt-get install gdb; deploy/dev/setup.sh installs it)");
        let guard = HungStop { gdb };
        // Attached, and running again after the attach stop.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_string()
            };
            if field("TracerPid:") != "0"
                && !field("TracerPid:").is_empty()
                && !field("State:").starts_with('t')
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gdb did not attach to etcd (pid {pid}): {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        guard
    }
}

impl Drop for HungStop {
    fn drop(&mut self) {
        // Its own child: ends the tracing (the tracee is detached) on every path.
        let _ = self.gdb.kill();
        let _ = self.gdb.wait();
    }
}

fn restart(fence: &Fence, timeout_ms: u32) -> UnitRequest {
    UnitRequest {
        operation_id: fence.operation_id.clone(),
        timeout_ms,
        fence: Some(fence.clone()),
        boot: false,
    }
}

fn with_step(fence: &Fence, step: &str) -> Fence {
    Fence {
        step: step.to_string(),
        ..fence.clone()
    }
}

/// A follower (so no leadership moves while etcd is killed).
fn follower(cluster: &Cluster) -> usize {
    let leader = cluster.leader();
    (0..cluster.layout.members.len())
        .find(|&i| i != leader)
        .expect("a follower")
}

fn agent_log(cluster: &Cluster, i: usize) -> String {
    std::fs::read_to_string(&cluster.member(i).agent_log).unwrap_or_default()
}

#[test]
fn a_restart_outlives_its_call_and_a_retry_gets_its_outcome() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .stop_timeout_secs(STOP_TIMEOUT_SECS)
        .start(bins!());
    let i = follower(&cluster);
    let name = cluster.member(i).name.clone();
    let before = cluster.etcd_pid(i);
    let _hung = HungStop::attach(before);
    let fence = with_step(&cluster.acquire_fence("op-hung"), &format!("restart:{name}"));
    let mut client = cluster.client(i, &Caller::Coordinator);

    // The caller goes away after 500 ms, long before the 2 s graceful stop ends.
    let gone = cluster.block_on(async {
        tokio::time::timeout(
            Duration::from_millis(500),
            client.restart_etcd(restart(&fence, 20_000)),
        )
        .await
    });
    assert!(gone.is_err(), "the call cannot have finished yet: {gone:?}");

    // A retry of the same step waits for the running restart's outcome.
    let started = Instant::now();
    let unit = cluster
        .block_on(client.restart_etcd(restart(&fence, 20_000)))
        .unwrap_or_else(|e| panic!("retry: {e:?}\n{}", cluster.logs()))
        .into_inner();
    assert_eq!(unit.state, UnitState::Active as i32, "{unit:?}");
    assert_ne!(unit.main_pid, before, "etcd was killed and started again");
    assert!(
        unit.detail
            .contains(&format!("killed after the {STOP_TIMEOUT_SECS} s graceful stop")),
        "{unit:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let log = agent_log(&cluster, i);
    assert!(log.contains("retried call waits for the running one"), "{log}");
    assert_eq!(log.matches("killing it (SIGKILL)").count(), 1, "{log}");

    // Once it finished, a retry is answered from the record: no second restart.
    let again = cluster
        .block_on(client.restart_etcd(restart(&fence, 20_000)))
        .expect("answered from the record")
        .into_inner();
    assert_eq!(again, unit);
    assert_eq!(cluster.etcd_pid(i), unit.main_pid, "restarted once, not twice");
    assert!(agent_log(&cluster, i).contains("retried call answered from the record"));

    cluster.wait_until("the cluster healthy again", Duration::from_secs(30), |c| {
        c.is_healthy()
    });
    cluster.release_fence(&fence);
}

#[test]
fn a_failed_restart_names_the_state_etcd_was_left_in_and_a_retry_repairs_it() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .stop_timeout_secs(STOP_TIMEOUT_SECS)
        .start(bins!());
    let i = follower(&cluster);
    let name = cluster.member(i).name.clone();
    let env_file = cluster.member(i).env_file.clone();
    let env = std::fs::read_to_string(&env_file).expect("env file");
    let _hung = HungStop::attach(cluster.etcd_pid(i));
    let fence = with_step(&cluster.acquire_fence("op-fail"), &format!("restart:{name}"));
    let mut client = cluster.client(i, &Caller::Coordinator);

    // etcd cannot be started again: its environment file is unreadable now.
    std::fs::write(&env_file, format!("{env}not a variable\n")).expect("break the env file");
    let err = cluster
        .block_on(client.restart_etcd(restart(&fence, 20_000)))
        .expect_err("the start fails");
    let message = err.message();
    assert!(
        message.starts_with(&format!(
            "etcd on {name} is stopped (killed after the {STOP_TIMEOUT_SECS} s graceful stop"
        )) && message.contains("the restart failed"),
        "{err:?}"
    );
    assert_ne!(err.code(), Code::DeadlineExceeded, "{err:?}");

    // The caller got that failure: a retry of the step runs for real.
    std::fs::write(&env_file, &env).expect("repair the env file");
    let unit = cluster
        .block_on(client.restart_etcd(restart(&fence, 20_000)))
        .unwrap_or_else(|e| panic!("retry: {e:?}\n{}", cluster.logs()))
        .into_inner();
    assert_eq!(unit.state, UnitState::Active as i32, "{unit:?}");
    cluster.wait_until("the cluster healthy again", Duration::from_secs(30), |c| {
        c.is_healthy()
    });
    cluster.release_fence(&fence);
}

#[test]
fn rolling_restart_with_a_hung_graceful_stop_leaves_no_member_stopped() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .stop_timeout_secs(STOP_TIMEOUT_SECS)
        .start(bins!());
    let i = follower(&cluster);
    let name = cluster.member(i).name.clone();
    let pids: Vec<u32> = (0..3).map(|m| cluster.etcd_pid(m)).collect();
    let hung = HungStop::attach(pids[i]);
    let ops = cluster.coordinator();

    let out = ops.run(&["restart", "--rolling", "--yes"]);
    drop(hung);
    // Every member's etcd runs afterwards, whether the operation succeeded or stopped.
    cluster.wait_until(
        "every member healthy after the rolling restart",
        Duration::from_secs(60),
        |c| c.is_healthy(),
    );
    for m in 0..3 {
        let unit = cluster
            .get_status(m, &Caller::Coordinator, 2000)
            .expect("status")
            .unit
            .expect("unit");
        assert_eq!(unit.state, UnitState::Active as i32, "member {m}: {unit:?}");
    }
    let log = agent_log(&cluster, i);
    assert!(log.contains("killing it (SIGKILL)"), "{log}");
    if out.code == 0 {
        for (m, pid) in pids.iter().enumerate() {
            assert_ne!(cluster.etcd_pid(m), *pid, "member {m} restarted");
        }
    } else {
        assert!(
            out.stderr.contains(&format!("etcd on {name} is")),
            "a failed step names the member's state:\nstdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
    }
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
}
