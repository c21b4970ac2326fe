//! The sled database behind a [`Store`]: opening it (read-write, or read-only on a private
//! copy), making what it wrote durable through power loss, and reopening it after an IO error.
//!
//! - **Durable.** sled 0.34's flush makes its log writes durable with `sync_file_range`, which
//!   neither flushes the drive's volatile cache nor the file's metadata, and it never syncs its
//!   blob files. [`Open::sync`] therefore follows every flush with `fdatasync` of sled's log file
//!   (`db`) and of every blob file written since the last sync (then `fsync` of `blobs/`). The
//!   log's writer and every table and snapshot write go through it (ADR 0001).
//! - **Reopened after an IO error.** Once sled meets an IO error (disk full, EIO) it fails every
//!   later operation until the database is opened again. The handle is therefore swappable:
//!   everything takes the current [`Open`] per operation and drops it soon after, and
//!   [`Inner::reopen`] replaces it with a freshly opened database (sled's own recovery then
//!   decides what the failed writes left).
//! - **Read-only.** sled has no read-only mode: opening a database writes to it (a recovery
//!   snapshot, a grown file, blobs it deems torn removed). [`Store::open_read_only`] copies the
//!   directory into a private temporary one under a shared lock (a running agent holds an
//!   exclusive one) and opens the copy; the original is never written.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Free space a write must leave on the file system, beyond four times its own size. sled 0.34
/// does not survive every failed write: a blob file (a leaf over ~128 KiB) it cannot write leaves
/// its log waiting forever for that write, wedging every later flush, even the one in its drop.
/// So a write that could run the disk out is refused before sled sees it (ADR 0001).
const RESERVE: u64 = 1 << 20;

/// How long opening waits for the database's lock file. sled releases it from background
/// threads shortly *after* its last handle is dropped, so reopening in the same process can
/// find it held for a few milliseconds; another process holding it is reported after this.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Opens the raw sled database in `path`, waiting up to [`LOCK_WAIT`] for its lock. For tools
/// (and tests) that inspect or repair trees below the log format; netfold itself uses [`Store`].
pub fn open_db(path: &Path) -> Result<sled::Db> {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(path).open() {
            // sled reports a held lock only as an IO error with this text.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(Error::InUse { path: path.to_path_buf() });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            opened => return opened.map_err(Error::db("opening the database")),
        }
    }
}

fn io<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { context, path: path.to_path_buf(), source }
}

/// One opened generation of the database.
pub(crate) struct Open {
    pub db: sled::Db,
    pub generation: u64,
    /// sled's log file and its blob directory; `None` for a temporary (in-memory) database,
    /// which has nothing to make durable.
    files: Option<Files>,
}

struct Files {
    log: File,
    log_path: PathBuf,
    blobs: PathBuf,
    /// Blob files already synced.
    synced: Mutex<HashSet<OsString>>,
}

impl Open {
    /// Flushes sled, then `fdatasync`s its log file and every blob written since the last sync
    /// (and `fsync`s the blob directory when one was). Only once this returns is what was
    /// written before it durable through power loss.
    pub fn sync(&self) -> Result<()> {
        self.db.flush().map_err(Error::db("flushing"))?;
        let Some(f) = &self.files else { return Ok(()) };
        f.log.sync_data().map_err(io("syncing sled's log file", &f.log_path))?;
        let mut synced = f.synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = false;
        for entry in std::fs::read_dir(&f.blobs).map_err(io("listing sled's blobs", &f.blobs))? {
            let entry = entry.map_err(io("listing sled's blobs", &f.blobs))?;
            let name = entry.file_name();
            if synced.contains(&name) {
                continue;
            }
            let path = entry.path();
            match File::open(&path) {
                Ok(file) => file.sync_data().map_err(io("syncing a blob file", &path))?,
                // sled removed it meanwhile (a rewritten leaf): nothing left to sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("opening a blob file", &path)(e)),
            }
            synced.insert(name);
            fresh = true;
        }
        if fresh {
            sync_dir(&f.blobs)?;
        }
        Ok(())
    }

    /// Refuses ([`Error::NoSpace`]) a write of `bytes` that would leave less than [`RESERVE`]
    /// free, before sled is asked to write anything.
    pub fn room_for(&self, bytes: usize) -> Result<()> {
        let Some(f) = &self.files else { return Ok(()) };
        let dir = f.log_path.parent().unwrap_or(&f.log_path);
        let free = fs2::available_space(dir).map_err(io("reading the free space", dir))?;
        let need = RESERVE.saturating_add(4 * bytes as u64);
        if free < need {
            return Err(Error::NoSpace { path: dir.to_path_buf(), free, need });
        }
        Ok(())
    }

    pub fn tree(&self, name: &str) -> Result<sled::Tree> {
        self.db.open_tree(name).map_err(Error::db("opening a tree"))
    }
}

/// Writes `writes` (a value to set, or `None` to remove the key) to `tree` atomically. One
/// write is a plain insert or remove; several are a sled batch, which costs sled a batch
/// manifest of its own in the log (a further write and writeback at the next flush), so a
/// single write does not pay for it.
pub(crate) fn write_atomically(tree: &sled::Tree, mut writes: Vec<crate::table::Write>) -> sled::Result<()> {
    if writes.len() == 1 {
        let (k, v) = writes.remove(0);
        return match v {
            Some(v) => tree.insert(k, v).map(drop),
            None => tree.remove(k).map(drop),
        };
    }
    let mut batch = sled::Batch::default();
    for (k, v) in writes {
        match v {
            Some(v) => batch.insert(k, v),
            None => batch.remove(k),
        }
    }
    tree.apply_batch(batch)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing a directory", dir))
}

/// Whether a store may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    ReadWrite,
    /// Opened on a private copy: nothing is appended, nothing is anchored.
    ReadOnly,
}

/// What every handle on one store shares.
pub(crate) struct Inner {
    /// sled's directory (for a read-only store: the private copy); `None` when temporary.
    pub dir: Option<PathBuf>,
    pub mode: Mode,
    current: RwLock<Option<Arc<Open>>>,
    /// The generation of the last database opened.
    generation: AtomicU64,
    reopening: Mutex<()>,
    /// Blob files sled discarded when it opened the read-only copy (a blob it found damaged,
    /// and every one written after it).
    pub discarded: Vec<String>,
    /// The private copy, removed when the store is dropped.
    _copy: Option<tempfile::TempDir>,
}

impl Inner {
    fn new(dir: Option<PathBuf>, mode: Mode, db: sled::Db) -> Result<Self> {
        let open = Self::wrap(dir.as_deref(), mode, db, 1)?;
        Ok(Self {
            dir,
            mode,
            current: RwLock::new(Some(Arc::new(open))),
            generation: AtomicU64::new(1),
            reopening: Mutex::new(()),
            discarded: Vec::new(),
            _copy: None,
        })
    }

    fn wrap(dir: Option<&Path>, mode: Mode, db: sled::Db, generation: u64) -> Result<Open> {
        let files = match (dir, mode) {
            (Some(dir), Mode::ReadWrite) => {
                let log_path = dir.join("db");
                let log = File::open(&log_path).map_err(io("opening sled's log file", &log_path))?;
                // The directory entries sled created (its log file, `conf`, `blobs/`).
                sync_dir(dir)?;
                Some(Files { log, log_path, blobs: dir.join("blobs"), synced: Mutex::default() })
            }
            _ => None,
        };
        Ok(Open { db, generation, files })
    }

    /// The database as currently open; after an IO error (see [`Inner::invalidate`]) it is
    /// reopened here, on demand. Fails while it cannot be (still no space, or a handle of the
    /// failed generation still alive): retry later.
    pub fn current(&self) -> Result<Arc<Open>> {
        if let Some(open) = self.current.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(open.clone());
        }
        let _one_at_a_time = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = self.current.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(open.clone());
        }
        let Some(dir) = &self.dir else {
            return Err(Error::Unavailable("a temporary database failed and cannot be reopened".into()));
        };
        let db = open_db(dir)?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let open = Arc::new(Self::wrap(Some(dir), self.mode, db, generation)?);
        tracing::info!(generation, dir = %dir.display(), "database reopened after an IO error");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(open.clone());
        Ok(open)
    }

    /// Marks `generation` as failed: sled fails every operation after its first IO error, so
    /// the next [`Inner::current`] opens the database again (once every handle on the failed
    /// one is dropped).
    pub fn invalidate(&self, generation: u64) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|o| o.generation == generation) {
            *current = None;
        }
    }

    /// Runs `f` on the current database; an IO error from sled or its files invalidates it (see
    /// above).
    pub fn with<T>(&self, f: impl FnOnce(&Open) -> Result<T>) -> Result<T> {
        let open = self.current()?;
        let out = f(&open);
        if let Err(e) = &out {
            if matches!(e, Error::Db { source: sled::Error::Io(_), .. } | Error::Io { .. }) {
                tracing::warn!(error = %e, generation = open.generation, "the database failed; it will be reopened");
                self.invalidate(open.generation);
            }
        }
        out
    }
}

/// One sled database holding netfold's logs and tables.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl Store {
    /// Opens (creating if needed) the database in directory `path`, for reading and writing.
    /// A database another process holds is [`Error::InUse`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let dir = path.as_ref().to_path_buf();
        let db = open_db(&dir)?;
        Ok(Self { inner: Arc::new(Inner::new(Some(dir), Mode::ReadWrite, db)?) })
    }

    /// Opens the database in `path` for reading only, on a private copy (sled writes to any
    /// database it opens): `path` is never changed. The copy is taken under a shared lock, so a
    /// running agent (which holds the database exclusively) is [`Error::InUse`]; it is removed
    /// when the store is dropped. Logs opened from it refuse appends and report lost
    /// acknowledged records through [`crate::SledLog::loss`] instead of failing.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        let src = path.as_ref();
        let log = src.join("db");
        if !log.is_file() {
            return Err(Error::NotAStore { path: src.to_path_buf() });
        }
        let copy = tempfile::Builder::new()
            .prefix("netfold-read-")
            .tempdir()
            .map_err(io("creating a temporary directory", Path::new("(temp)")))?;
        {
            let _shared = lock_shared(&log)?;
            copy_tree(src, copy.path())?;
        }
        let before = blob_names(&copy.path().join("blobs"));
        let db = sled::Config::new().path(copy.path()).open().map_err(Error::db("opening a copy of the database"))?;
        let after = blob_names(&copy.path().join("blobs"));
        let mut inner = Inner::new(Some(copy.path().to_path_buf()), Mode::ReadOnly, db)?;
        inner.discarded = before.difference(&after).cloned().collect();
        inner.discarded.sort();
        inner._copy = Some(copy);
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Whether another process holds the database in `path` right now (a running agent: sled
    /// locks its log file exclusively while open). Asks once, without waiting; a directory with
    /// no database is not in use. The audit commands ask this to choose between reading the
    /// directory and asking the agent.
    pub fn in_use(path: impl AsRef<Path>) -> bool {
        let Ok(file) = File::open(path.as_ref().join("db")) else { return false };
        // Dropping the file releases the shared lock at once. Any other failure to lock is left
        // to opening, which names it.
        matches!(fs2::FileExt::try_lock_shared(&file), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// A throw-away database in a temporary directory, removed on drop (tests, dry runs).
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new().temporary(true).open().map_err(Error::db("opening a temporary database"))?;
        Ok(Self { inner: Arc::new(Inner::new(None, Mode::ReadWrite, db)?) })
    }

    /// Blob files (sled's files for large leaves) that sled discarded when it opened this
    /// read-only copy: it found the first damaged or missing its successor and dropped it and
    /// every later one. Empty for a read-write store.
    pub fn discarded_blobs(&self) -> &[String] {
        &self.inner.discarded
    }

    /// The durable key-value table named `name`.
    pub fn table(&self, name: &str) -> Result<crate::Table> {
        let tree = format!("{name}.table");
        self.inner.with(|o| o.tree(&tree))?;
        Ok(crate::Table::new(self.inner.clone(), tree))
    }

    /// The names of the logs (trees `<name>.log`) and of the tables (`<name>.table`) the
    /// database holds, sorted.
    pub fn names(&self) -> Result<(Vec<String>, Vec<String>)> {
        let trees = self.inner.with(|o| Ok(o.db.tree_names()))?;
        let (mut logs, mut tables) = (Vec::new(), Vec::new());
        for t in trees {
            let name = String::from_utf8_lossy(&t).into_owned();
            if let Some(log) = name.strip_suffix(".log") {
                logs.push(log.to_string());
            } else if let Some(table) = name.strip_suffix(".table") {
                tables.push(table.to_string());
            }
        }
        logs.sort();
        tables.sort();
        Ok((logs, tables))
    }

    /// Makes everything written so far durable (sled's flush, then `fdatasync`: ADR 0001).
    pub fn flush(&self) -> Result<()> {
        self.inner.with(Open::sync)
    }
}

/// A shared lock on sled's log file: excludes a running agent (sled takes it exclusively)
/// while a copy is made. Waits up to [`LOCK_WAIT`] like [`open_db`].
fn lock_shared(log: &Path) -> Result<File> {
    let file = File::open(log).map_err(io("opening sled's log file", log))?;
    let started = Instant::now();
    loop {
        // fs2's lock, named explicitly: it is the flock(2) sled's exclusive lock conflicts with.
        match fs2::FileExt::try_lock_shared(&file) {
            Ok(()) => return Ok(file),
            Err(_) if started.elapsed() < LOCK_WAIT => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => {
                return Err(Error::InUse { path: log.parent().unwrap_or(log).to_path_buf() });
            }
        }
    }
}

/// Copies every file under `src` into `dst` (which exists), keeping the tree's shape.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    for entry in std::fs::read_dir(src).map_err(io("listing the database", src))? {
        let entry = entry.map_err(io("listing the database", src))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type().map_err(io("reading the database", &from))?;
        if kind.is_dir() {
            std::fs::create_dir(&to).map_err(io("copying the database", &to))?;
            copy_tree(&from, &to)?;
        } else if kind.is_file() {
            std::fs::copy(&from, &to).map_err(io("copying the database", &from))?;
        }
    }
    Ok(())
}

fn blob_names(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}
