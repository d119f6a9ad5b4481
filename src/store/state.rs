//! `--state-dir`: the memory store's history across a planned restart.
//!
//! At a graceful shutdown, once nothing appends any more, the store is written to
//! `DIR/history.snap` atomically: a temporary file in the same directory, fsynced, renamed over
//! the name, and the directory fsynced, so a crash mid-write leaves either the old state or the
//! new one, never half a file. At start the snapshot is read and **consumed**: removed (and the
//! removal fsynced) before the server serves anything, so it is never loaded twice. A node that
//! then dies without a graceful shutdown (`kill -9`, a crash, power loss) finds no snapshot at
//! its next start and begins a fresh epoch: every client that resumes with an old cursor is told
//! of the gap. Loading a snapshot a second time would instead bring back the old epoch with an
//! old head, and the node would hand out sequence numbers it had already used, silently skipping
//! messages for every client whose cursor was ahead of that head.
//!
//! A snapshot that cannot be read (truncated, damaged) is moved aside to
//! `DIR/history.snap.corrupt` (replacing an older one) with a one-line error, and the node starts
//! with a fresh epoch: it stays available, and clients learn of the loss through the gap reply.
//! One written by another format version (a downgrade) is left in place and the node refuses to
//! start: the file is not damaged, and the Halley that wrote it can still load it.
//!
//! One process per state directory: nothing stops two servers sharing one (the snapshot would be
//! the last one written), so don't.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use super::memory::SnapshotError;
use super::{HistoryLimits, MemoryStore, Store};

/// The snapshot's name in the state directory.
pub const SNAPSHOT: &str = "history.snap";
/// Where an unreadable snapshot is moved.
pub const CORRUPT: &str = "history.snap.corrupt";
/// The temporary file a snapshot is written to before it is renamed into place.
const TEMP: &str = "history.snap.tmp";

/// The state directory of one server.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Creates `dir` if needed and checks that a snapshot can be written there, so a directory
    /// that cannot hold one fails the start, not the shutdown. A temporary file left by a
    /// write that was cut short is removed.
    pub fn open(dir: &Path) -> io::Result<StateDir> {
        let fail =
            |what: &str, e: io::Error| io::Error::new(e.kind(), format!("state dir {}: {what}: {e}", dir.display()));
        fs::create_dir_all(dir).map_err(|e| fail("cannot create it", e))?;
        let state = StateDir { dir: dir.to_owned() };
        let temp = state.path(TEMP);
        File::create(&temp).map_err(|e| fail("cannot write in it", e))?;
        fs::remove_file(&temp).map_err(|e| fail("cannot remove a file in it", e))?;
        Ok(state)
    }

    /// The path of `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The store to start with: the saved history if there is a snapshot, which is consumed
    /// (removed, the removal fsynced) before this returns; else an empty store with a new
    /// epoch. An unreadable snapshot is moved aside (see the module doc); one of another format
    /// version is an error, and so is a snapshot that cannot be removed.
    pub fn take(&self, limits: HistoryLimits) -> io::Result<MemoryStore> {
        let path = self.path(SNAPSHOT);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::info!("state dir {}: no saved history, starting a new epoch", self.dir.display());
                return Ok(MemoryStore::new(limits));
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))),
        };
        match MemoryStore::read_snapshot(BufReader::new(file), limits, crate::hub::system_clock_ms()) {
            Ok((store, loaded)) => {
                // Consumed before anything is served: an unclean stop from now on must start a
                // new epoch, never this one again.
                fs::remove_file(&path)
                    .and_then(|()| sync_dir(&self.dir))
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot consume {}: {e}", path.display())))?;
                log::info!(
                    "restored epoch {} at seq {} from {}: {} of {} messages kept by the history limits (the file is consumed; only a graceful stop writes it again)",
                    store.epoch(),
                    store.head(),
                    path.display(),
                    loaded.kept,
                    loaded.in_file
                );
                Ok(store)
            }
            Err(SnapshotError::Version(v)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: format version {v}, this halley reads version {}; start the halley that wrote it, or move the file away to start with empty history",
                    path.display(),
                    super::memory::SNAPSHOT_VERSION
                ),
            )),
            Err(SnapshotError::Io(e)) => Err(io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))),
            Err(SnapshotError::Corrupt(why)) => {
                let aside = self.path(CORRUPT);
                fs::rename(&path, &aside).and_then(|()| sync_dir(&self.dir)).map_err(|e| {
                    io::Error::new(e.kind(), format!("{} is corrupt ({why}) and cannot be moved aside: {e}", path.display()))
                })?;
                log::error!(
                    "{} is corrupt ({why}): moved to {}; starting a new epoch, clients resuming get the gap reply",
                    path.display(),
                    aside.display()
                );
                Ok(MemoryStore::new(limits))
            }
        }
    }

    /// Writes `store` atomically as the snapshot (temporary file, fsync, rename, fsync of the
    /// directory). Call it only once nothing appends any more.
    pub fn save(&self, store: &MemoryStore) -> io::Result<()> {
        let (temp, path) = (self.path(TEMP), self.path(SNAPSHOT));
        let written = (|| {
            let file = File::create(&temp)?;
            let mut out = BufWriter::new(file);
            store.write_snapshot(&mut out)?;
            let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp, &path)?;
            sync_dir(&self.dir)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(io::Error::new(e.kind(), format!("cannot save history to {}: {e}", path.display())));
        }
        log::info!(
            "saved epoch {} at seq {} ({} messages) to {}",
            store.epoch(),
            store.head(),
            store.stats().messages,
            path.display()
        );
        Ok(())
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
