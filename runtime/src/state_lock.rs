//! One daemon per state folder: `sluice run` holds an exclusive `flock` on
//! `STATE_DIR/sluice.lock` while it runs, with its pid written in the file. A
//! second daemon on the same folder refuses to start, naming the first one's
//! pid: two daemons would read the same input twice, write duplicates to the
//! same sinks and overwrite each other's `status.json` and checkpoints.
//!
//! The kernel drops the lock when the process ends, however it ends (`kill
//! -9` included): a lock file left behind never blocks the next start.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The lock file's name in the state folder.
pub const LOCK_FILE: &str = "sluice.lock";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

/// Why the state folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "another sluice ({holder}) runs with the state folder {dir} (it holds {lock}): stop it, or give this one another [daemon] state_dir"
    )]
    Held {
        /// `pid N`, or `pid unknown` when the file holds none.
        holder: String,
        /// The state folder.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The folder or the file cannot be made, opened or written.
    #[error("cannot lock the state folder {dir}: {source}")]
    Io {
        /// The state folder.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl StateLock {
    /// Creates `state_dir` if needed and takes its lock without waiting.
    ///
    /// # Errors
    /// [`LockError::Held`] when another process holds it; [`LockError::Io`]
    /// when the folder or the lock file cannot be made or written.
    pub fn acquire(state_dir: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            dir: state_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        // Absolute in messages, whatever the config's folder.
        let state_dir = &std::fs::canonicalize(state_dir).map_err(io)?;
        let path = state_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(LockError::Held {
                    holder: holder(&mut file),
                    dir: state_dir.to_path_buf(),
                    lock: path,
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(StateLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `pid N` from the holder's lock file. The holder writes its pid right after
/// it takes the lock: an empty file is read again for up to 200 ms.
fn holder(file: &mut File) -> String {
    for _ in 0..20 {
        let mut text = String::new();
        if file.rewind().is_ok()
            && file.read_to_string(&mut text).is_ok()
            && let Ok(pid) = text.trim().parse::<u32>()
        {
            return format!("pid {pid}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    "pid unknown".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_then_taken_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateLock::acquire(&state).unwrap();
        assert_eq!(
            std::fs::read_to_string(state.join(LOCK_FILE)).unwrap(),
            format!("{}\n", std::process::id())
        );
        // flock locks belong to the open file: a second open in this process
        // conflicts as another process's would.
        let err = StateLock::acquire(&state).unwrap_err();
        let LockError::Held { holder, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(holder, &format!("pid {}", std::process::id()));
        assert!(err.to_string().contains(state.to_str().unwrap()), "{err}");
        drop(first);
        let again = StateLock::acquire(&state).unwrap();
        assert_eq!(again.path(), state.join(LOCK_FILE));
    }

    #[test]
    fn a_stale_pid_in_an_unlocked_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "4194303\n").unwrap();
        let _lock = StateLock::acquire(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            format!("{}\n", std::process::id())
        );
    }
}
