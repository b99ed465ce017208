//! Certificate reload without a restart: on SIGHUP and when a certificate, key or client CA
//! file changes.
//!
//! Place in the data flow: beside the listeners. One task per server watches the directories
//! of every TLS listener's files (a directory, not the file, because tools replace certificates
//! by renaming a new file over the old one, and Kubernetes swaps a `..data` symlink) and
//! listens for SIGHUP; either calls [`TlsSetup::reload`] on every TLS listener. A reload that
//! fails is logged and the listener keeps its previous certificate; new handshakes use the new
//! one, established sessions are not touched.
//!
//! File events are debounced ([`DEBOUNCE`]): a certificate and its key are usually written one
//! after the other, and reloading between the two would fail on a key that does not match.

use crate::transport::tls::TlsSetup;
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Quiet time after a file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Reloads every setup; returns how many failed (and kept their previous certificate).
pub(crate) fn reload_all(setups: &[Arc<TlsSetup>]) -> usize {
    let mut failed = 0;
    for setup in setups {
        match setup.reload() {
            Ok(()) => info!(listener = %setup.listener, "TLS certificate reloaded"),
            Err(e) => {
                failed += 1;
                error!(
                    listener = %setup.listener,
                    error = %e,
                    "TLS certificate reload failed; keeping the previous certificate"
                );
            }
        }
    }
    failed
}

/// Reloads on SIGHUP and on file changes until `stop` is cancelled.
pub(crate) async fn watch(setups: Vec<Arc<TlsSetup>>, stop: CancellationToken) {
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    // Kept alive for the loop's life: dropping the watcher stops the events.
    let _watcher = match start_watcher(&setups, changed_tx) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            warn!(error = %e, "cannot watch the certificate files; SIGHUP still reloads them");
            None
        }
    };
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(()) = changed.recv() => {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(DEBOUNCE) => {}
                }
                while changed.try_recv().is_ok() {}
                info!("certificate files changed; reloading");
                reload_all(&setups);
            }
            Some(()) = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                info!("SIGHUP received; reloading certificates");
                reload_all(&setups);
            }
        }
    }
}

/// Watches the directories of every setup's files; sends on `changed` when one of those files
/// (or a Kubernetes `..data` link beside them) is created, written, renamed or removed.
fn start_watcher(
    setups: &[Arc<TlsSetup>],
    changed: mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let files: Vec<PathBuf> = setups
        .iter()
        .flat_map(|s| s.files())
        .map(|f| std::path::absolute(&f).unwrap_or(f))
        .collect();
    let names: HashSet<OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(OsString::from))
        .collect();
    let dirs: HashSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(PathBuf::from))
        .collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading the files (our own reload) must not trigger another reload.
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|path| {
            path.file_name().is_some_and(|name| {
                names.contains(name) || name.to_string_lossy().starts_with("..")
            })
        });
        if relevant {
            // Full means a reload is already pending, which will see this change too.
            let _ = changed.try_send(());
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}
