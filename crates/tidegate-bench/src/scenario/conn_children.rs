//! `conn --processes K`: the tool re-executes itself K times so that each process stays under
//! the per-process open-files limit (20,000 here, not raisable).
//!
//! Place in the data flow: parent [`spawn`]s children with `conn --child` and a share of the
//! connections and of the rate → each child runs
//! [`open_and_hold`](super::conn_worker::open_and_hold) and prints [`ChildLine`]s (JSON, one
//! per line) on stdout → the parent mirrors their progress into per-child counters (for the
//! RSS checkpoints and the progress line) → closing a child's stdin releases it → the child
//! prints its [`WorkerOutcome`] and exits. A child whose parent dies sees its stdin close and
//! exits too, so no orphan keeps connections open.

use super::conn_worker::{ConnCounters, WorkerOutcome, open_and_hold};
use super::{RunEnv, ScenarioError};
use crate::cli::ConnArgs;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a child reports its counts.
const PROGRESS_EVERY: Duration = Duration::from_millis(10);

/// One line a child writes on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ChildLine {
    /// Counts so far.
    Progress {
        /// Connections with a CONNACK.
        opened: u64,
        /// Failed attempts.
        failed: u64,
        /// Connections the broker closed.
        dropped: u64,
    },
    /// The final report, after release.
    Done(WorkerOutcome),
}

/// A running child.
#[derive(Debug)]
pub struct ChildHandle {
    /// Its counts, updated from its progress lines.
    pub counters: Arc<ConnCounters>,
    stdin: Option<ChildStdin>,
    child: Child,
    outcome: JoinHandle<Result<WorkerOutcome, String>>,
}

/// Splits `n` into `k` shares differing by at most one.
pub fn shares(n: u32, k: u32) -> Vec<u32> {
    let k = k.max(1);
    (0..k).map(|i| n / k + u32::from(i < n % k)).collect()
}

/// The command line of child `index`, opening `count` connections at `rate`.
pub fn child_args(args: &ConnArgs, env: &RunEnv, index: u32, count: u32, rate: u64) -> Vec<String> {
    let c = &args.common;
    let mut v: Vec<String> = vec![
        "conn".into(),
        "--child".into(),
        "--quiet".into(),
        "--url".into(),
        env.target.to_string(),
        "--protocol".into(),
        env.protocol_name().into(),
        "--keepalive".into(),
        c.keepalive.to_string(),
        "--connections".into(),
        count.to_string(),
        "--conn-rate".into(),
        rate.to_string(),
        "--client-id-prefix".into(),
        format!("{}-w{index}", env.client_prefix),
        "--connect-timeout".into(),
        format!("{}ms", c.connect_timeout.as_millis()),
    ];
    if let Some(s) = &c.source_addrs {
        v.extend(["--source-addrs".into(), s.spec.clone()]);
    }
    if let Some(u) = &c.username {
        v.extend(["--username".into(), u.clone()]);
    }
    if let Some(p) = &c.password {
        v.extend(["--password".into(), p.clone()]);
    }
    let paths = [
        ("--ca-file", &c.ca_file),
        ("--cert", &c.cert),
        ("--key", &c.key),
    ];
    for (flag, path) in paths {
        if let Some(p) = path {
            v.extend([flag.into(), p.display().to_string()]);
        }
    }
    if c.insecure {
        v.push("--insecure".into());
    }
    if let Some(n) = &c.server_name {
        v.extend(["--server-name".into(), n.clone()]);
    }
    v
}

/// Starts the children.
pub fn spawn(args: &ConnArgs, env: &RunEnv) -> Result<Vec<ChildHandle>, ScenarioError> {
    let exe = std::env::current_exe()
        .map_err(|e| ScenarioError::Failed(format!("cannot find own executable: {e}")))?;
    let k = args.processes;
    let rate_shares: Vec<u64> = shares(
        u32::try_from(args.common.conn_rate.min(u64::from(u32::MAX))).unwrap_or(u32::MAX),
        k,
    )
    .into_iter()
    .map(u64::from)
    .collect();
    let mut out = Vec::new();
    for (i, count) in shares(args.common.connections, k).into_iter().enumerate() {
        let i = i as u32;
        // With a rate, every child must get a non-zero share or it would run unpaced.
        let rate = if args.common.conn_rate == 0 {
            0
        } else {
            rate_shares.get(i as usize).copied().unwrap_or(1).max(1)
        };
        let mut child = Command::new(&exe)
            .args(child_args(args, env, i, count, rate))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ScenarioError::Failed(format!("cannot start child {i}: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| ScenarioError::Failed("child without stdout".into()))?;
        let counters = Arc::new(ConnCounters::default());
        let outcome = tokio::spawn(read_lines(stdout, counters.clone()));
        out.push(ChildHandle {
            counters,
            stdin: child.stdin.take(),
            child,
            outcome,
        });
    }
    Ok(out)
}

async fn read_lines(
    stdout: tokio::process::ChildStdout,
    counters: Arc<ConnCounters>,
) -> Result<WorkerOutcome, String> {
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        match serde_json::from_str::<ChildLine>(&line) {
            Ok(ChildLine::Progress {
                opened,
                failed,
                dropped,
            }) => counters.set(opened, failed, dropped),
            Ok(ChildLine::Done(o)) => {
                counters.set(o.opened, o.failed, o.dropped);
                return Ok(o);
            }
            Err(e) => return Err(format!("bad line from child: {e}: {line:?}")),
        }
    }
    Err("child exited without a report".into())
}

impl ChildHandle {
    /// Releases the child (closes its stdin) and collects its outcome.
    pub async fn finish(mut self, timeout: Duration) -> Result<WorkerOutcome, String> {
        drop(self.stdin.take());
        let outcome = match tokio::time::timeout(timeout, &mut self.outcome).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("child reader failed: {e}")),
            Err(_) => Err("child did not report in time".to_string()),
        };
        if outcome.is_err() {
            let _ = self.child.start_kill();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        outcome
    }
}

/// The child side: open this process's share, report progress, hold until stdin closes.
pub async fn run_child(args: &ConnArgs) -> Result<(), ScenarioError> {
    let env = RunEnv::new(&args.common).await?;
    let counters = Arc::new(ConnCounters::default());
    let (release_tx, release_rx) = watch::channel(false);
    let worker = {
        let (env, counters) = (env.clone(), counters.clone());
        let (n, rate) = (args.common.connections, args.common.conn_rate);
        tokio::spawn(async move { open_and_hold(&env, n, rate, counters, release_rx).await })
    };
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut last = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = counters.get();
                if last != Some(now) {
                    last = Some(now);
                    emit(&ChildLine::Progress { opened: now.0, failed: now.1, dropped: now.2 })?;
                }
            }
            r = stdin.read(&mut buf) => {
                if matches!(r, Ok(0) | Err(_)) {
                    break;
                }
            }
        }
    }
    let _ = release_tx.send(true);
    let outcome = worker
        .await
        .map_err(|e| ScenarioError::Failed(format!("worker failed: {e}")))?;
    emit(&ChildLine::Done(outcome))
}

fn emit(line: &ChildLine) -> Result<(), ScenarioError> {
    let text = serde_json::to_string(line).map_err(|e| ScenarioError::Failed(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|_| out.flush())
        .map_err(|e| ScenarioError::Failed(format!("parent went away: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_one_at_most() {
        assert_eq!(shares(20_000, 3), vec![6_667, 6_667, 6_666]);
        assert_eq!(shares(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(shares(10, 0), vec![10]);
    }

    #[test]
    fn child_lines_round_trip() {
        let p = ChildLine::Progress {
            opened: 3,
            failed: 1,
            dropped: 0,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(
            text,
            r#"{"type":"progress","opened":3,"failed":1,"dropped":0}"#
        );
        assert_eq!(serde_json::from_str::<ChildLine>(&text).unwrap(), p);
        let d = ChildLine::Done(WorkerOutcome {
            opened: 7,
            ..Default::default()
        });
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<ChildLine>(&text).unwrap(), d);
    }
}
