//! The `file` source over a directory (Spark's file source): every file in
//! it, or those whose name matches a glob, each read once to its end, in
//! name order; with `follow = true`, files that appear later are picked up
//! too (the folder is listed again whenever the source has nothing to read,
//! at once when a file of the folder changes, by inotify, else every 100
//! ms). The names of the files already read are kept in the checkpoint, so a
//! restart reads none of them again, and resumes inside the one it was
//! reading. A name leaves that set when its file leaves the folder: the set
//! is never larger than the folder, and a file put back under a read name is
//! a new file, as is a read file renamed to a new name that matches.
//!
//! ```toml
//! [sources.logs]
//! type = "file"
//! path = "incoming/"        # a directory: every file in it
//! # or: glob = "incoming/*.ndjson"   (`*` and `?` in the file name only)
//! follow = true             # keep waiting for new files; false: read those
//!                           # there at the start, then end
//! ```
//!
//! A file is read once, to its end as it is then: put a file in place
//! complete (write it elsewhere, then rename it in), as Spark asks. Names
//! starting with `.` (a copy in progress, by rsync's convention) and
//! anything but regular files are skipped. Each file may be plain or gzip,
//! and with `format = "csv"` each file's first line is its header.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use super::file::{FileLines, Wake};
use super::{Lines, Read1};
use crate::checkpoint::{DirPosition, Position};

/// A directory source, built. Its `Debug` text is what checkpoints record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSource {
    /// The directory.
    pub dir: PathBuf,
    /// The glob the file names must match (`None`: every file).
    pub pattern: Option<String>,
    /// Keep waiting for new files.
    pub follow: bool,
}

impl super::Source for DirSource {
    fn parallel_decode(&self) -> Option<bool> {
        Some(true)
    }

    fn describe(&self) -> String {
        match &self.pattern {
            Some(p) => self.dir.join(p).display().to_string(),
            None => format!("{}/", self.dir.display()),
        }
    }

    fn replay(&self) -> super::Replay {
        super::Replay::Position
    }

    fn run(&self, cx: super::SourceContext<'_>) -> anyhow::Result<()> {
        let resume = match &cx.resume {
            Some(Position::Dir(p)) => Some(p.clone()),
            _ => None,
        };
        let lines = DirLines::open(self.clone(), cx.spec.max_line_bytes, resume)?;
        super::run_lines(cx, Box::new(lines))
    }
}

/// Whether `name` matches `pattern`: `*` any run of characters, `?` any one
/// character, everything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative wildcard matching: the last `*` and where it was tried.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The files of a directory read one after another.
pub struct DirLines {
    source: DirSource,
    max_line: usize,
    /// Names of the files read to their end.
    done: BTreeSet<String>,
    /// The file being read, by name.
    current: Option<(String, FileLines)>,
    /// Follow mode: wakes a wait when a file of the folder changes (made at
    /// the first wait; `None` then, or if the folder cannot be watched).
    wake: Option<Wake>,
    /// The folder could not be watched: poll.
    polls: bool,
}

impl DirLines {
    /// Opens the directory; with `resume`, skips the files it lists as read
    /// and goes on inside the one it was reading.
    ///
    /// # Errors
    /// The file being read at the checkpoint cannot be resumed: it was
    /// replaced or rewritten since, as a single-file source would refuse.
    pub fn open(
        source: DirSource,
        max_line: usize,
        resume: Option<DirPosition>,
    ) -> anyhow::Result<Self> {
        let mut lines = DirLines {
            source,
            max_line,
            done: BTreeSet::new(),
            current: None,
            wake: None,
            polls: false,
        };
        if let Some(position) = resume {
            lines.done = position.done;
            if let Some(at) = position.current {
                let name = name_of(&at.path);
                if at.path.exists() {
                    let file = FileLines::open_at(at.path.clone(), false, max_line, Some(&at))?;
                    lines.current = Some((name, file));
                } else {
                    tracing::warn!(path = %at.path.display(), "the file being read at the checkpoint is gone: going on with the next");
                    lines.done.insert(name);
                }
            }
        }
        Ok(lines)
    }

    /// The next file to read: the first by name that is not read yet.
    fn next_file(&mut self) -> io::Result<Option<(String, PathBuf)>> {
        let mut names: Vec<String> = Vec::new();
        let mut present = BTreeSet::new();
        for entry in std::fs::read_dir(&self.source.dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                tracing::warn!(dir = %self.source.dir.display(), "skipping a file whose name is not UTF-8: {:?}", entry.file_name());
                continue;
            };
            if self.done.contains(&name) {
                present.insert(name);
                continue;
            }
            if name.starts_with('.')
                || self
                    .source
                    .pattern
                    .as_deref()
                    .is_some_and(|p| !glob_match(p, &name))
            {
                continue;
            }
            // Follows symlinks: a link to a regular file is read.
            if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
                names.push(name);
            }
        }
        // Files removed from the folder leave the set (it holds no more than
        // the folder): one put back under the same name is a new file.
        self.done = present;
        Ok(names
            .into_iter()
            .min()
            .map(|n| (n.clone(), self.source.dir.join(n))))
    }
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Lines for DirLines {
    fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Read1> {
        loop {
            let Some((name, file)) = &mut self.current else {
                match self.next_file()? {
                    Some((name, path)) => {
                        tracing::info!(path = %path.display(), "reading");
                        match FileLines::open_at(path.clone(), false, self.max_line, None) {
                            Ok(file) => self.current = Some((name, file)),
                            // Removed since the listing: nothing to read.
                            Err(_) if !path.exists() => {}
                            Err(e) => return Err(io::Error::other(e)),
                        }
                        continue;
                    }
                    None if self.source.follow => return Ok(Read1::Idle),
                    None => return Ok(Read1::Eof),
                }
            };
            match file.next_line(buf)? {
                Read1::Eof => {
                    self.done.insert(std::mem::take(name));
                    self.current = None;
                }
                other => return Ok(other),
            }
        }
    }

    fn drained(&self) -> bool {
        self.current.as_ref().is_none_or(|(_, f)| f.drained())
    }

    fn wait(&mut self, max: std::time::Duration) {
        if self.wake.is_none() && !self.polls {
            match Wake::folder(&self.source.dir) {
                Ok(w) => self.wake = Some(w),
                Err(e) => {
                    tracing::debug!(dir = %self.source.dir.display(), "cannot watch the folder, polling: {e}");
                    self.polls = true;
                }
            }
        }
        match &self.wake {
            Some(w) => {
                let _ = w.events.recv_timeout(max);
            }
            None => std::thread::sleep(max),
        }
    }

    fn position(&self) -> Option<Position> {
        let current = match &self.current {
            None => None,
            Some((_, f)) => match f.position()? {
                Position::File(p) => Some(p),
                _ => return None,
            },
        };
        Some(Position::Dir(DirPosition {
            dir: self.source.dir.clone(),
            done: self.done.clone(),
            current,
        }))
    }

    fn line_is_first(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|(_, f)| f.line_is_first())
    }

    fn first_line(&mut self) -> Result<Vec<u8>, String> {
        match &mut self.current {
            Some((_, f)) => f.first_line(),
            None => Err("no file is being read".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.ndjson", "a.ndjson"));
        assert!(glob_match("*.ndjson", ".ndjson"));
        assert!(!glob_match("*.ndjson", "a.ndjson.gz"));
        assert!(glob_match("*.ndjson*", "a.ndjson.gz"));
        assert!(glob_match("log-??.txt", "log-01.txt"));
        assert!(!glob_match("log-??.txt", "log-1.txt"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYbc"));
        assert!(!glob_match("a*b*c", "aXXbYYbd"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        assert!(glob_match("é*", "été"));
    }

    fn source(dir: &Path, follow: bool) -> DirSource {
        DirSource {
            dir: dir.to_path_buf(),
            pattern: Some("*.log".into()),
            follow,
        }
    }

    fn read_all(lines: &mut DirLines) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            match lines.next_line(&mut buf).unwrap() {
                Read1::Line => out.push(String::from_utf8(buf.clone()).unwrap()),
                Read1::Eof | Read1::Idle => return out,
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn reads_matching_files_once_in_name_order_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("b.log", "b1\nb2\n");
        write("a.log", "a1\na2");
        write("c.txt", "not matched\n");
        write(".d.log", "hidden\n");
        std::fs::create_dir(dir.path().join("e.log")).unwrap();
        let mut lines = DirLines::open(source(dir.path(), true), 100, None).unwrap();
        assert_eq!(read_all(&mut lines), ["a1", "a2", "b1", "b2"]);
        // Nothing new: idle; a new file is read, an old one not again.
        write("c.log", "c1\n");
        write("a.log", "a1\na2\na3\n");
        let mut buf = Vec::new();
        assert!(matches!(lines.next_line(&mut buf).unwrap(), Read1::Line));
        assert_eq!(buf, b"c1");
        assert!(lines.line_is_first());
        let Some(Position::Dir(at)) = lines.position() else {
            panic!()
        };
        assert_eq!(
            at.done.iter().collect::<Vec<_>>(),
            ["a.log", "b.log"],
            "c.log is being read"
        );
        assert_eq!(at.current.as_ref().unwrap().offset, 3);
        // Resumed from there, with one more line and one more file.
        write("c.log", "c1\nc2\n");
        write("0.log", "z\n");
        let mut again = DirLines::open(source(dir.path(), false), 100, Some(at)).unwrap();
        assert_eq!(read_all(&mut again), ["c2", "z"]);
        assert_eq!(
            again.done.iter().collect::<Vec<_>>(),
            ["0.log", "a.log", "b.log", "c.log"]
        );
        // A file removed leaves the set; put back, it is a new file.
        std::fs::remove_file(dir.path().join("b.log")).unwrap();
        assert_eq!(read_all(&mut again), Vec::<String>::new());
        assert_eq!(
            again.done.iter().collect::<Vec<_>>(),
            ["0.log", "a.log", "c.log"]
        );
        write("b.log", "b3\n");
        assert_eq!(read_all(&mut again), ["b3"]);
    }

    #[test]
    fn first_line_of_a_resumed_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.log"), "h1,h2\n1,2\n3,4\n").unwrap();
        let mut lines = DirLines::open(source(dir.path(), false), 100, None).unwrap();
        let mut buf = Vec::new();
        lines.next_line(&mut buf).unwrap();
        assert!(lines.line_is_first());
        lines.next_line(&mut buf).unwrap();
        assert!(!lines.line_is_first());
        let Some(Position::Dir(at)) = lines.position() else {
            panic!()
        };
        let mut again = DirLines::open(source(dir.path(), false), 100, Some(at)).unwrap();
        again.next_line(&mut buf).unwrap();
        assert_eq!(buf, b"3,4");
        assert!(!again.line_is_first());
        assert_eq!(again.first_line().unwrap(), b"h1,h2");
    }
}
