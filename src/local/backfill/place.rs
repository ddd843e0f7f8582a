//! A backfill's place in its archive, and keeping it on disk: the checkpoint's lock, and the checkpoint's writes.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::local::LocalError;
use crate::local::archive::ArchiveFile;
use crate::local::checkpoint::{CHECKPOINT_VERSION, Checkpoint, Place, Run, Totals};
use intercom_relay_lambda::event::format_timestamp;

/// How far the archive is done: the first `file` files, then `lines` lines of the next; `sent` holds events of later
/// lines the destination confirmed already.
#[derive(Clone, Debug, Default)]
pub(crate) struct Position {
    pub(crate) file: usize,
    pub(crate) lines: u64,
    pub(crate) sent: Vec<String>,
}

/// `archive/x.gz after line 5000`, `the start of archive/y.gz`, `the end of the archive`.
pub(crate) fn place_text(files: &[ArchiveFile], file: usize, lines: u64) -> String {
    match files.get(file) {
        None => "the end of the archive".to_owned(),
        Some(f) if lines == 0 => format!("the start of {}", f.path.display()),
        Some(f) => format!("{} after line {lines}", f.path.display()),
    }
}

/// Holds `<checkpoint>.lock` for the run: a second run of the same backfill is refused while the first goes on. The
/// file stays when the run ends (removing it would let two later runs lock two different files).
pub(crate) fn lock(checkpoint: &Path) -> Result<std::fs::File, LocalError> {
    let mut name = checkpoint.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    let path = checkpoint.with_file_name(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LocalError::Io(format!("cannot write the checkpoint's lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LocalError::Usage(format!(
            "another run of this backfill is under way (it holds {}): wait for it, or stop it with Ctrl-C",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(LocalError::Io(format!("cannot lock the checkpoint's lock file {}: {e}", path.display())))
        }
    }
}

/// Writes the checkpoint, when one is kept.
pub(crate) struct Saver<'a> {
    pub(crate) path: Option<PathBuf>,
    pub(crate) run: Run,
    pub(crate) files: &'a [ArchiveFile],
    pub(crate) digests: &'a [String],
}

impl Saver<'_> {
    pub(crate) fn save(&self, at: &Position, totals: &Totals, finished: bool) -> Result<(), LocalError> {
        let Some(path) = &self.path else { return Ok(()) };
        let current = self.files.get(at.file).filter(|_| at.lines > 0 || !at.sent.is_empty()).map(|file| Place {
            path: file.path.display().to_string(),
            bytes: file.bytes,
            lines: at.lines,
            sent: at.sent.clone(),
        });
        let checkpoint = Checkpoint {
            version: CHECKPOINT_VERSION,
            run: self.run.clone(),
            files_done: at.file,
            files_digest: self.digests[at.file].clone(),
            last_done: at.file.checked_sub(1).map(|i| self.files[i].path.display().to_string()),
            current,
            finished,
            totals: *totals,
            updated_at: format_timestamp(OffsetDateTime::now_utc()),
        };
        checkpoint.save(path).map_err(|e| {
            LocalError::Io(format!(
                "cannot write the checkpoint {}: {e}; events up to {} are sent",
                path.display(),
                place_text(self.files, at.file, at.lines)
            ))
        })
    }
}
