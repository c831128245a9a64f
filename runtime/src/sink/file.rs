//! The `file` sink: a file, one record per line, appended to (created if
//! missing) or truncated at start. A batch is written with a single
//! `write_all`, so the file only ever holds whole batches of whole lines; a
//! checkpoint records its length and a crash cuts it back to that length.
//!
//! ```toml
//! [sinks.out]
//! type = "file"
//! path = "out.ndjson"   # relative to the config file
//! truncate = false      # truncate at start instead of appending
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use sluice_plugin_sdk::Batch;

use super::{Built, Claim, Output, Resume, SinkSpec, lines_of};
use crate::config::{BuildContext, ConfigError};

/// `[sinks.NAME] type = "file"`: the kind's own fields.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Output file, relative to the config file.
    pub path: Option<toml::Spanned<PathBuf>>,
    /// Truncate the file at start instead of appending. Default false.
    #[serde(default)]
    pub truncate: bool,
}

impl super::SinkConfig for FileConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Built, ConfigError> {
        let path = self.path.as_ref().ok_or_else(|| {
            cx.config.error(
                cx.table.span.clone(),
                format!("sink `{}`: a file sink needs `path`", cx.name),
            )
        })?;
        let resolved = crate::config::resolve(cx.base, path.get_ref());
        Ok(Built {
            claims: vec![(Claim::File(resolved.clone()), path.span())],
            spec: SinkSpec(std::sync::Arc::new(FileSink {
                path: resolved,
                truncate: self.truncate,
            })),
        })
    }
}

/// A file sink, built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSink {
    /// The file.
    pub path: PathBuf,
    /// Truncate at start.
    pub truncate: bool,
}

impl super::Sink for FileSink {
    fn open(&self, name: &str, resume: Option<Resume>) -> anyhow::Result<Box<dyn Output>> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("sink `{name}`: cannot create {}", dir.display()))?;
        }
        let regular = std::fs::metadata(&self.path).map_or(true, |m| m.is_file());
        let file = if regular {
            let truncate = self.truncate && resume.is_none();
            OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .append(!truncate)
                .truncate(truncate)
                .open(&self.path)
        } else {
            open_for_a_reader(&self.path, name)
        }
        .with_context(|| format!("sink `{name}`: cannot open {}", self.path.display()))?;
        if let Some(Resume::CutTo(len)) = resume.filter(|_| regular) {
            cut_back(&file, len, name, &self.path)?;
        }
        Ok(Box::new(FileOutput::new(file, regular, name, &self.path)?))
    }
}

/// Opens a FIFO (or a device) for writing only: a reader that goes away fails
/// the sink (EPIPE) instead of the records piling up unread in the pipe, as
/// they would with the pipe open for reading too. A FIFO with no reader yet
/// is tried again every 100 ms (a non-blocking open, `ENXIO` until a reader
/// comes: POSIX `open(2)`), until one comes or the daemon stops; the records
/// wait in the sink's queue meanwhile.
fn open_for_a_reader(path: &std::path::Path, name: &str) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut told = false;
    loop {
        match OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)
        {
            Ok(file) => {
                // Writes block again (backpressure) once open.
                rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty())?;
                if told {
                    tracing::info!(sink = name, path = %path.display(), "a reader came: writing");
                }
                return Ok(file);
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                if super::stopping() {
                    return Err(std::io::Error::other(
                        "the daemon stopped while the FIFO had no reader",
                    ));
                }
                if !told {
                    told = true;
                    tracing::info!(sink = name, path = %path.display(), "a FIFO with no reader: waiting for one (records wait)");
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Cuts a file sink back to the length a checkpoint recorded.
fn cut_back(file: &File, len: u64, name: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let now = file.metadata()?.len();
    if now > len {
        tracing::info!(sink = name, path = %path.display(), checkpoint_bytes = len, discarded_bytes = now - len, "resuming: output written after the checkpoint is cut off and will be written again");
        file.set_len(len)
            .with_context(|| format!("sink `{name}`: cannot cut {} back", path.display()))?;
    } else if now < len {
        tracing::warn!(sink = name, path = %path.display(), checkpoint_bytes = len, bytes = now, "resuming: the file is shorter than at the checkpoint (changed by something else?): appending to it");
    }
    Ok(())
}

/// A file written batch by batch. A batch that cannot be written whole (a full
/// disk) is cut off again, so the file never ends in half a line.
struct FileOutput {
    file: File,
    /// Length of the file after the last whole batch.
    len: u64,
    /// A regular file (not a FIFO or a device): it has a length to record
    /// and cut back to, and can be fsync'd.
    regular: bool,
    /// The lines of the batch being written.
    buf: Vec<u8>,
}

impl FileOutput {
    /// Takes an opened file; when appending to a file whose last line was cut
    /// short (a previous process killed mid-write), ends that line first so new
    /// records do not glue onto it.
    fn new(
        mut file: File,
        regular: bool,
        name: &str,
        path: &std::path::Path,
    ) -> anyhow::Result<Self> {
        use std::io::{Read, Seek, SeekFrom};
        let mut len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                tracing::warn!(sink = name, path = %path.display(), "the file ends in an unterminated line: ending it before appending");
                file.write_all(b"\n")?;
                len += 1;
            }
        }
        Ok(FileOutput {
            file,
            len,
            regular,
            buf: Vec::new(),
        })
    }
}

impl Output for FileOutput {
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        lines_of(batch, &mut self.buf);
        let lines = &self.buf;
        if let Err(e) = self.file.write_all(lines) {
            // Take back the part that was written (a FIFO's cannot be), and
            // put the position back for a file not opened to append, so that
            // the batch can be written again (a full disk is retried).
            if self.regular {
                use std::io::{Seek, SeekFrom};
                let _ = self.file.set_len(self.len);
                let _ = self.file.seek(SeekFrom::Start(self.len));
                // A full disk or quota on a file is waited out (a device
                // such as /dev/full stays full: it fails the sink).
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) {
                    return Err(anyhow::Error::new(e).context(super::Retry("the disk is full")));
                }
            }
            return Err(e.into());
        }
        self.len += lines.len() as u64;
        Ok(())
    }
    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        if !self.regular {
            // A pipe or a device: written through, nothing to fsync or cut
            // back (at-least-once).
            return Ok(None);
        }
        self.file.sync_data()?;
        Ok(Some(self.len))
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        if self.regular {
            self.file.sync_data()?;
        }
        Ok(())
    }
}
