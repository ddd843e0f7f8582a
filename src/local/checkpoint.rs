//! A backfill's checkpoint: how far it got, written atomically (a temporary file, synced, renamed over the old one)
//! after every batch the queue confirmed, so that rerunning the same command resumes exactly there.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::archive::ArchiveFile;

/// The format this build writes and reads.
pub(crate) const CHECKPOINT_VERSION: u32 = 1;

/// What a backfill counted, over every run of it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    /// Lines read (blank ones included).
    pub(crate) lines: u64,
    /// Events read, each event of a batch line counted.
    pub events: u64,
    /// Events the queue (or the local pipeline) confirmed.
    pub sent: u64,
    /// Events outside `--since`/`--until`.
    pub filtered: u64,
    /// Events refused, and lines holding none that could be read.
    pub(crate) rejected: u64,
    /// Events whose messageId came again soon after (Segment's archive is written at least once).
    pub(crate) duplicates: u64,
}

/// The command a checkpoint belongs to: resuming under another would skip or repeat events.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) paths: Vec<String>,
    /// The queue URL, or where the local pipeline sends.
    pub(crate) destination: String,
    pub(crate) since: Option<String>,
    pub(crate) until: Option<String>,
}

/// How far into a file the backfill is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Place {
    pub(crate) path: String,
    /// Its size when the checkpoint was written.
    pub(crate) bytes: u64,
    /// Lines wholly done: each of their events confirmed, filtered or refused.
    pub lines: u64,
    /// Events of later lines the queue confirmed already (when a batch was confirmed only in part).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<String>,
}

/// The file on disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    pub(crate) version: u32,
    pub(crate) run: Run,
    /// Files read to the end: the first `files_done` of the run's sorted list.
    pub files_done: usize,
    /// SHA-256 of those files' paths and sizes, so that a changed archive is noticed rather than skipped.
    pub(crate) files_digest: String,
    /// The path of the last of them, for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_done: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Place>,
    /// The whole archive was read and sent.
    pub finished: bool,
    pub totals: Totals,
    pub(crate) updated_at: String,
}

/// Where a run starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Start {
    /// Index of the first file to read.
    pub(crate) file: usize,
    /// Lines of that file already done.
    pub(crate) lines: u64,
    /// Events past those lines the queue holds already.
    pub(crate) sent: Vec<String>,
    pub(crate) totals: Totals,
    /// Whether this resumes an earlier run.
    pub(crate) resumed: bool,
}

/// The digests of the first 0, 1, 2… of `files`, each over their paths and sizes.
pub(crate) fn prefix_digests(files: &[ArchiveFile]) -> Vec<String> {
    let mut hasher = Sha256::new();
    let mut out = Vec::with_capacity(files.len() + 1);
    out.push(intercom_relay_lambda::hex(hasher.clone().finalize().as_slice()));
    for file in files {
        hasher.update(file.path.to_string_lossy().as_bytes());
        hasher.update(format!("\0{}\n", file.bytes).as_bytes());
        out.push(intercom_relay_lambda::hex(hasher.clone().finalize().as_slice()));
    }
    out
}

impl Checkpoint {
    /// Reads the checkpoint at `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read the checkpoint {}: {e}", path.display())),
        };
        let checkpoint: Checkpoint = serde_json::from_str(&text).map_err(|e| {
            format!("the checkpoint {} is not one this build wrote ({e}); remove it to start over", path.display())
        })?;
        if checkpoint.version != CHECKPOINT_VERSION {
            return Err(format!(
                "the checkpoint {} has version {}; this build reads version {CHECKPOINT_VERSION}",
                path.display(),
                checkpoint.version
            ));
        }
        Ok(Some(checkpoint))
    }

    /// Writes it to `path` atomically: a reader (or a crash) sees the old checkpoint or the new one, never a mix.
    pub(crate) fn save(&self, path: &Path) -> std::io::Result<()> {
        let temporary = temporary(path);
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(self).expect("a checkpoint serialises"))?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)?;
        // The rename itself survives a power cut once the directory is synced.
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Where `run` over `files` resumes from this checkpoint, or why it cannot.
    pub(crate) fn start(
        &self,
        run: &Run,
        files: &[ArchiveFile],
        digests: &[String],
        path: &Path,
    ) -> Result<Start, CheckpointMismatch> {
        let checkpoint = path.display().to_string();
        if self.run != *run {
            return Err(CheckpointMismatch::AnotherRun { checkpoint, was: describe(&self.run) });
        }
        if self.finished {
            let (updated_at, sent) = (self.updated_at.clone(), self.totals.sent);
            return Err(CheckpointMismatch::Finished { checkpoint, updated_at, sent });
        }
        let same_files = self.files_done <= files.len() && digests.get(self.files_done) == Some(&self.files_digest);
        if !same_files {
            let last = self.last_done.clone().unwrap_or_else(|| "-".into());
            return Err(CheckpointMismatch::OtherArchive { checkpoint, files_done: self.files_done, last });
        }
        let (lines, sent) = match &self.current {
            None => (0, Vec::new()),
            Some(place) => {
                let file = files.get(self.files_done);
                let same = file.is_some_and(|f| f.path.to_string_lossy() == place.path && f.bytes == place.bytes);
                if !same {
                    return Err(CheckpointMismatch::NotTheNextFile { checkpoint, place: place.clone() });
                }
                (place.lines, place.sent.clone())
            }
        };
        Ok(Start { file: self.files_done, lines, sent, totals: self.totals, resumed: true })
    }
}

/// Why a checkpoint cannot resume the backfill asked for; each message names the checkpoint and how to start over.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckpointMismatch {
    #[error(
        "the checkpoint {checkpoint} belongs to another backfill ({was}); run that command to resume it, or {}",
        start_over(checkpoint)
    )]
    AnotherRun { checkpoint: String, was: String },
    #[error(
        "the backfill of the checkpoint {checkpoint} finished at {updated_at}: {sent} events sent; nothing is sent \
         again. To send them again, {}",
        start_over(checkpoint)
    )]
    Finished { checkpoint: String, updated_at: String, sent: u64 },
    #[error(
        "the archive is not the one the checkpoint {checkpoint} was written for: its first {files_done} files (up to \
         {last}) were read to the end, and they are not the first {files_done} files now (a file was added among \
         them, removed, or changed size). Restore them, or {}",
        start_over(checkpoint)
    )]
    OtherArchive { checkpoint: String, files_done: usize, last: String },
    #[error(
        "the checkpoint {checkpoint} is {} lines into {} ({} bytes), which is not the next file of the archive now, or \
         changed size. Restore it, or {}",
        place.lines,
        place.path,
        place.bytes,
        start_over(checkpoint)
    )]
    NotTheNextFile { checkpoint: String, place: Place },
}

fn start_over(checkpoint: &str) -> String {
    format!("remove {checkpoint} (or pass another --checkpoint) to start over")
}

fn describe(run: &Run) -> String {
    let mut text = format!("{} to {}", run.paths.join(" "), run.destination);
    if let Some(since) = &run.since {
        text.push_str(&format!(", --since {since}"));
    }
    if let Some(until) = &run.until {
        text.push_str(&format!(", --until {until}"));
    }
    text
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[(&str, u64)]) -> Vec<ArchiveFile> {
        names.iter().map(|(path, bytes)| ArchiveFile { path: PathBuf::from(path), bytes: *bytes }).collect()
    }

    fn run() -> Run {
        Run { paths: vec!["archive".into()], destination: "q.fifo".into(), since: None, until: None }
    }

    fn checkpoint(files_done: usize, digests: &[String], current: Option<Place>) -> Checkpoint {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            run: run(),
            files_done,
            files_digest: digests[files_done].clone(),
            last_done: None,
            current,
            finished: false,
            totals: Totals { sent: 7, ..Totals::default() },
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_checkpoint_is_written_atomically_and_read_back() {
        let dir = std::env::temp_dir().join(format!("checkpoint-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("backfill.ckpt");
        let list = files(&[("archive/a.gz", 10)]);
        let digests = prefix_digests(&list);
        let place = Place { path: "archive/a.gz".into(), bytes: 10, lines: 3, sent: vec!["m-9".into()] };
        let written = checkpoint(0, &digests, Some(place));
        written.save(&path).unwrap();
        assert!(!dir.join("backfill.ckpt.tmp").exists());
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(written.clone()));
        let start = written.start(&run(), &list, &digests, &path).unwrap();
        assert_eq!((start.file, start.lines, start.sent, start.totals.sent), (0, 3, vec!["m-9".to_owned()], 7));
        assert_eq!(Checkpoint::load(&dir.join("none")).unwrap(), None);
    }

    #[test]
    fn a_checkpoint_of_another_run_or_a_changed_archive_is_refused_with_the_reason() {
        let path = Path::new("b.ckpt");
        let list = files(&[("archive/a.gz", 10), ("archive/b.gz", 20), ("archive/c.gz", 30)]);
        let digests = prefix_digests(&list);
        let place = |lines| Some(Place { path: "archive/b.gz".into(), bytes: 20, lines, sent: vec![] });
        let ok = checkpoint(1, &digests, place(5));
        assert_eq!(ok.start(&run(), &list, &digests, path).unwrap().lines, 5);

        let other = Run { since: Some("2025-01-01".into()), ..run() };
        assert!(
            ok.start(&other, &list, &digests, path).unwrap_err().to_string().contains("belongs to another backfill")
        );

        let inserted = files(&[("archive/0.gz", 1), ("archive/a.gz", 10), ("archive/b.gz", 20)]);
        let error = ok.start(&run(), &inserted, &prefix_digests(&inserted), path).unwrap_err().to_string();
        assert!(error.contains("its first 1 files"), "{error}");

        let grown = files(&[("archive/a.gz", 10), ("archive/b.gz", 21)]);
        let error = ok.start(&run(), &grown, &prefix_digests(&grown), path).unwrap_err().to_string();
        assert!(error.contains("5 lines into archive/b.gz (20 bytes)"), "{error}");

        let finished = Checkpoint { finished: true, ..ok };
        let error = finished.start(&run(), &list, &digests, path).unwrap_err().to_string();
        assert!(error.contains("finished") && error.contains("7 events sent"), "{error}");
    }
}
