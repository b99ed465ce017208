//! Unix domain socket listeners: binding the socket file (stale file removed, mode and owner
//! applied) and reading the peer's credentials.
//!
//! Place in the data flow: `bind` at start-up gives the listener its socket; for each accepted
//! stream [`peer_credentials`] fills the uid, gid and pid of the [`ConnInfo`] from
//! `SO_PEERCRED`, which the kernel vouches for, so a local process can later be trusted by its
//! user id without a password.
//!
//! A socket file left behind by a crashed server would make `bind` fail with "address in use";
//! it is removed when nobody answers on it. A file that is not a socket, or a socket a live
//! server still answers on, is never removed. The file is removed again when the listener is
//! dropped (on shutdown).

use crate::config::ListenerConfig;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tidegate_core::ConnInfo;
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

/// Why a unix listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnixError {
    /// Another process accepts connections on the path.
    #[error("{}: another server is listening on this socket", .0.display())]
    InUse(PathBuf),
    /// Something other than a socket is at the path.
    #[error("{}: exists and is not a socket; not removing it", .0.display())]
    NotASocket(PathBuf),
    /// A filesystem call failed.
    #[error("{}: cannot {what}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was attempted.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// `owner` names no user of `/etc/passwd`.
    #[error("unknown user {0:?} (give a name from /etc/passwd or a numeric uid)")]
    UnknownUser(String),
    /// `group` names no group of `/etc/group`.
    #[error("unknown group {0:?} (give a name from /etc/group or a numeric gid)")]
    UnknownGroup(String),
    /// `mode` is invalid (validation catches it first).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A bound unix socket; its file is removed when it is dropped.
#[derive(Debug)]
pub(crate) struct UnixSocket {
    /// The listening socket.
    pub(crate) listener: UnixListener,
    path: PathBuf,
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        if is_socket(&self.path) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Binds the listener's `path` (see the module docs). Needs a tokio runtime.
pub(crate) fn bind(config: &ListenerConfig) -> Result<UnixSocket, UnixError> {
    let Some(path) = config.path.clone() else {
        return Err(UnixError::Io {
            path: PathBuf::new(),
            what: "bind without a path",
            source: io::ErrorKind::InvalidInput.into(),
        });
    };
    let io_error = |what: &'static str| {
        let path = path.clone();
        move |source| UnixError::Io { path, what, source }
    };
    remove_stale(&path)?;
    let listener = UnixListener::bind(&path).map_err(io_error("bind"))?;
    // From here on the file is ours: dropping `socket` on an error below removes it.
    let socket = UnixSocket {
        listener,
        path: path.clone(),
    };
    if let Some(mode) = config.unix_mode()? {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_error("chmod"))?;
    }
    let uid = config.owner.as_deref().map(resolve_user).transpose()?;
    let gid = config.group.as_deref().map(resolve_group).transpose()?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(&path, uid, gid).map_err(io_error("chown"))?;
    }
    Ok(socket)
}

fn remove_stale(path: &Path) -> Result<(), UnixError> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(UnixError::NotASocket(path.to_path_buf()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(UnixError::InUse(path.to_path_buf()));
    }
    fs::remove_file(path).map_err(|source| UnixError::Io {
        path: path.to_path_buf(),
        what: "remove the stale socket file",
        source,
    })?;
    info!(path = %path.display(), "removed a stale socket file");
    Ok(())
}

/// A numeric uid, or the uid of a user named in `/etc/passwd`.
fn resolve_user(name: &str) -> Result<u32, UnixError> {
    resolve(name, "/etc/passwd", 2).ok_or_else(|| UnixError::UnknownUser(name.to_owned()))
}

/// A numeric gid, or the gid of a group named in `/etc/group`.
fn resolve_group(name: &str) -> Result<u32, UnixError> {
    resolve(name, "/etc/group", 2).ok_or_else(|| UnixError::UnknownGroup(name.to_owned()))
}

/// Looks `name` up in a colon-separated database whose `id_field` holds the id. Only the
/// local files are read (no NSS, LDAP or systemd-userdb): numeric ids always work.
fn resolve(name: &str, database: &str, id_field: usize) -> Option<u32> {
    if let Ok(id) = name.parse() {
        return Some(id);
    }
    let text = fs::read_to_string(database).ok()?;
    lookup(&text, name, id_field)
}

fn lookup(database: &str, name: &str, id_field: usize) -> Option<u32> {
    database.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(id_field - 1)?.parse().ok())
            .flatten()
    })
}

/// Fills `info` with the peer's uid, gid and pid (`SO_PEERCRED`).
pub(crate) fn peer_credentials(stream: &UnixStream, info: &mut ConnInfo) {
    match stream.peer_cred() {
        Ok(cred) => {
            info.peer_uid = Some(cred.uid());
            info.peer_gid = Some(cred.gid());
            info.peer_pid = cred.pid();
        }
        // Not expected on Linux; the connection still works, only without credentials.
        Err(e) => warn!(error = %e, "cannot read the unix peer's credentials"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerKind;

    #[test]
    fn names_resolve_from_the_local_databases() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nmqtt:x:1001:1002::/home/mqtt:/bin/sh\n";
        assert_eq!(lookup(passwd, "mqtt", 2), Some(1001));
        assert_eq!(lookup(passwd, "nobody", 2), None);
        let group = "root:x:0:\nmqtt:x:1002:alice\n";
        assert_eq!(lookup(group, "mqtt", 2), Some(1002));
        assert_eq!(resolve_user("4242").unwrap(), 4242);
        assert_eq!(resolve_user("root").unwrap(), 0);
        assert!(matches!(
            resolve_group("no-such-group-here"),
            Err(UnixError::UnknownGroup(_))
        ));
    }

    #[tokio::test]
    async fn stale_sockets_are_replaced_live_ones_and_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let config = ListenerConfig {
            mode: Some("600".to_owned()),
            ..ListenerConfig::new(ListenerKind::Unix, path.to_str().unwrap())
        };
        // A socket file whose server is gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(is_socket(&path));
        let socket = bind(&config).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A live one is kept.
        assert!(matches!(bind(&config), Err(UnixError::InUse(_))));
        drop(socket);
        assert!(
            !path.exists(),
            "the socket file is removed with the listener"
        );
        fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(bind(&config), Err(UnixError::NotASocket(_))));
        assert!(path.exists());
    }

    #[tokio::test]
    async fn peer_credentials_are_those_of_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut info = ConnInfo::default();
        peer_credentials(&a, &mut info);
        assert_eq!(
            info.peer_pid,
            Some(i32::try_from(std::process::id()).unwrap())
        );
        let uid = fs::metadata("/proc/self").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(info.peer_uid, Some(uid.uid()));
        assert_eq!(info.peer_gid, Some(uid.gid()));
    }
}
