//! `shared.xml` and `config.xml` on disk: atomic, durable, locked, never silently lost.
//!
//! **Writes** ([`Store::save_shared`], [`Store::save_config`]) hold the lock, write
//! the whole document to `<name>.tmp-<pid>` in the same directory, `fsync` it, rename
//! it over `<name>`, and `fsync` the directory. A crash at any point leaves either the
//! old complete file or the new one (rename is atomic on POSIX file systems); a left
//! over temporary file is ignored by loads and removed by the next save.
//!
//! **The lock** is an exclusive OS file lock (`flock(2)` on Linux, `LockFileEx` on
//! Windows, through [`File::try_lock`]) on the file `.chorus.lock` in the directory.
//! The kernel releases it when its holder closes the file or dies, so a crash never
//! leaves a lock behind and there is no stale lock to detect or break: the lock file
//! itself stays in the directory, and its content (the holder's process id, written
//! after the lock is taken) is only there to name the holder in an error. Another
//! holder is waited for up to [`StoreConfig::lock_wait`], then
//! [`FileErrorKind::Locked`] is returned. So two processes saving at once both
//! succeed, one after the other, and the file is always one of their two complete
//! versions.
//!
//! **Updates** ([`Store::update_shared`], [`Store::update_config`]) hold the lock from
//! the load through the save, so processes that each change part of a file (one
//! refreshes the host cache, another records the NAT type) never undo each other: a
//! separate load and save can interleave with another process's and lose its change.
//!
//! **Loads** return `Ok(None)` for a missing file. A file that is too large, not
//! well-formed, truncated, of a newer major version, or otherwise invalid is never
//! discarded: it is renamed to `<name>.corrupt-<unix seconds>` and the error
//! ([`FileError`], naming the file, the position and the new name) is returned, so the
//! caller can tell the user and start fresh. A wrong or missing password moves nothing.
//!
//! This is the one part of the crate that does I/O: it blocks (use
//! `tokio::task::spawn_blocking` from async code) and reads the system clock only to
//! bound the lock wait.
//!
//! ```
//! use std::time::SystemTime;
//! use chorus_hostcache::store::{Store, StoreConfig};
//! use chorus_hostcache::hostcache::Source;
//!
//! let dir = std::env::temp_dir().join(format!("chorus-store-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let store = Store::new(&dir, StoreConfig::default())?;
//! let now = SystemTime::now();
//! let mut shared = store.load_shared(now)?.unwrap_or(store.empty_shared()?);
//! shared.host_cache.insert("192.0.2.1:33033".parse()?, Source::Bootstrap, now)?;
//! store.save_shared(&shared)?;
//! assert_eq!(store.load_shared(now)?.unwrap().host_cache.len(), 1);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use chorus_crypto::at_rest::{self, AtRestConfig};
use chorus_crypto::{AuthError, Error as CryptoError};
use chorus_framing::Entropy;

use crate::error::{Error, FileError, FileErrorKind, UsageError};
use crate::hostcache::unix_secs;
use crate::xml::{ConfigFile, Limits, SharedFile};

/// File name of the host cache and NAT info.
pub const SHARED_XML: &str = "shared.xml";
/// File name of the buddy list and settings.
pub const CONFIG_XML: &str = "config.xml";
/// File name of the lock.
pub const LOCK_FILE: &str = ".chorus.lock";

/// Store policy. Validated by [`Store::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Bounds on file contents (including the largest file read, 8 MiB by default).
    pub limits: Limits,
    /// How long to wait for another process's lock. Default 5 seconds.
    pub lock_wait: Duration,
    /// PBKDF2 parameters for encrypting `config.xml` (600,000 iterations by default).
    pub at_rest: AtRestConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            lock_wait: Duration::from_secs(5),
            at_rest: AtRestConfig::default(),
        }
    }
}

/// The files of one profile directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    config: StoreConfig,
}

impl Store {
    /// A store over `dir` (which must exist).
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] for a zero maximum file length or invalid cache or
    /// buddy limits.
    pub fn new(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Self, Error> {
        if config.limits.max_file_len == 0 {
            return Err(UsageError::InvalidConfig("max_file_len must be positive").into());
        }
        SharedFile::new(&config.limits)?;
        ConfigFile::new(&config.limits)?;
        Ok(Self {
            dir: dir.as_ref().to_owned(),
            config,
        })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The policy.
    #[must_use]
    pub const fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// An empty `shared.xml` under this store's limits.
    ///
    /// # Errors
    /// Never, for a store that `new` accepted.
    pub fn empty_shared(&self) -> Result<SharedFile, Error> {
        SharedFile::new(&self.config.limits)
    }

    /// An empty `config.xml` under this store's limits.
    ///
    /// # Errors
    /// Never, for a store that `new` accepted.
    pub fn empty_config(&self) -> Result<ConfigFile, Error> {
        ConfigFile::new(&self.config.limits)
    }

    /// Loads `shared.xml`; `Ok(None)` if there is none. `now` names a damaged file's
    /// new name and ranks entries beyond the cache's bound.
    ///
    /// # Errors
    /// [`Error::File`]; see the module docs for what happens to a damaged file.
    pub fn load_shared(&self, now: SystemTime) -> Result<Option<SharedFile>, Error> {
        let _lock = self.lock()?;
        self.load_shared_unlocked(now)
    }

    /// Saves `shared.xml` atomically and durably.
    ///
    /// # Errors
    /// [`Error::File`] ([`FileErrorKind::Io`] or [`FileErrorKind::Locked`]); the old
    /// file is then intact.
    pub fn save_shared(&self, file: &SharedFile) -> Result<(), Error> {
        let _lock = self.lock()?;
        self.write_atomic(SHARED_XML, file.encode().as_bytes())
    }

    /// Loads `shared.xml` (an empty one if there is none), lets `change` edit it and
    /// saves the result, holding the lock throughout: no other process's update
    /// made in the meantime is lost.
    ///
    /// # Errors
    /// As [`Store::load_shared`] (nothing is saved then) and [`Store::save_shared`].
    pub fn update_shared<R>(
        &self,
        now: SystemTime,
        change: impl FnOnce(&mut SharedFile) -> R,
    ) -> Result<R, Error> {
        let _lock = self.lock()?;
        let mut file = match self.load_shared_unlocked(now)? {
            Some(f) => f,
            None => self.empty_shared()?,
        };
        let result = change(&mut file);
        self.write_atomic(SHARED_XML, file.encode().as_bytes())?;
        Ok(result)
    }

    fn load_shared_unlocked(&self, now: SystemTime) -> Result<Option<SharedFile>, Error> {
        let limits = &self.config.limits;
        self.load(SHARED_XML, now, |bytes, path| {
            SharedFile::decode(bytes, path, limits, now)
        })
    }

    /// Whether `config.xml` exists and is encrypted (so a password is needed).
    ///
    /// # Errors
    /// [`FileErrorKind::Io`] if it cannot be read.
    pub fn config_is_encrypted(&self) -> Result<bool, Error> {
        let path = self.dir.join(CONFIG_XML);
        let mut head = Vec::new();
        match File::open(&path) {
            Ok(f) => f
                .take(at_rest::MAGIC.len() as u64)
                .read_to_end(&mut head)
                .map_err(|e| io_error(&path, "read", &e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(&path, "open", &e)),
        };
        Ok(at_rest::is_sealed(&head))
    }

    /// Loads `config.xml`, decrypting it with `password` if it is encrypted;
    /// `Ok(None)` if there is none.
    ///
    /// # Errors
    /// [`Error::File`]: [`FileErrorKind::PasswordRequired`] or
    /// [`FileErrorKind::WrongPassword`] (the file stays where it is),
    /// [`FileErrorKind::Tampered`] and content errors (the file is moved aside).
    pub fn load_config(
        &self,
        password: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<Option<ConfigFile>, Error> {
        let _lock = self.lock()?;
        self.load_config_unlocked(password, now)
    }

    fn load_config_unlocked(
        &self,
        password: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<Option<ConfigFile>, Error> {
        let limits = &self.config.limits;
        self.load(CONFIG_XML, now, |bytes, path| {
            let fail = |kind| {
                Error::File(FileError {
                    path: path.to_owned(),
                    kind,
                    moved_to: None,
                })
            };
            if !at_rest::is_sealed(bytes) {
                return ConfigFile::decode(bytes, path, limits);
            }
            let password = password.ok_or_else(|| fail(FileErrorKind::PasswordRequired))?;
            let plain = at_rest::open_with_password(bytes, password).map_err(|e| {
                fail(match e {
                    CryptoError::Auth(AuthError::WrongPassword) => FileErrorKind::WrongPassword,
                    _ => FileErrorKind::Tampered,
                })
            })?;
            ConfigFile::decode(&plain, path, limits)
        })
    }

    /// Saves `config.xml` atomically and durably: encrypted under `password` (with a
    /// fresh salt and nonce from `entropy`) if one is given, else in clear.
    ///
    /// # Errors
    /// [`Error::File`] as [`Store::save_shared`]; [`Error::Entropy`].
    pub fn save_config(
        &self,
        file: &ConfigFile,
        password: Option<&[u8]>,
        entropy: &mut dyn Entropy,
    ) -> Result<(), Error> {
        let _lock = self.lock()?;
        self.save_config_locked(file, password, entropy)
    }

    /// Loads `config.xml` (an empty one if there is none; decrypted with `password`
    /// if it is encrypted), lets `change` edit it and saves the result (encrypted
    /// under `password` if one is given), holding the lock throughout.
    ///
    /// # Errors
    /// As [`Store::load_config`] (nothing is saved then) and [`Store::save_config`].
    pub fn update_config<R>(
        &self,
        password: Option<&[u8]>,
        now: SystemTime,
        entropy: &mut dyn Entropy,
        change: impl FnOnce(&mut ConfigFile) -> R,
    ) -> Result<R, Error> {
        let _lock = self.lock()?;
        let mut file = match self.load_config_unlocked(password, now)? {
            Some(f) => f,
            None => self.empty_config()?,
        };
        let result = change(&mut file);
        self.save_config_locked(&file, password, entropy)?;
        Ok(result)
    }

    /// `save_config` with the lock already held.
    fn save_config_locked(
        &self,
        file: &ConfigFile,
        password: Option<&[u8]>,
        entropy: &mut dyn Entropy,
    ) -> Result<(), Error> {
        let xml = file.encode();
        match password {
            None => self.write_atomic(CONFIG_XML, xml.as_bytes()),
            Some(pw) => {
                let sealed =
                    at_rest::seal_with_password(xml.as_bytes(), pw, &self.config.at_rest, entropy)
                        .map_err(|e| match e {
                            CryptoError::Entropy(e) => Error::Entropy(e),
                            _ => UsageError::InvalidConfig("at_rest parameters").into(),
                        })?;
                self.write_atomic(CONFIG_XML, &sealed)
            }
        }
    }

    /// Reads and parses `name`; the caller holds the lock.
    fn load<T>(
        &self,
        name: &str,
        now: SystemTime,
        parse: impl FnOnce(&[u8], &Path) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        let path = self.dir.join(name);
        let max = self.config.limits.max_file_len as u64;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, "open", &e)),
        };
        let len = file
            .metadata()
            .map_err(|e| io_error(&path, "stat", &e))?
            .len();
        let mut bytes = Vec::new();
        if len <= max {
            file.take(max + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| io_error(&path, "read", &e))?;
        }
        let result = if len > max || bytes.len() as u64 > max {
            Err(Error::File(FileError {
                path: path.clone(),
                kind: FileErrorKind::TooLarge {
                    len: len.max(bytes.len() as u64),
                    max,
                },
                moved_to: None,
            }))
        } else {
            parse(&bytes, &path)
        };
        match result {
            Ok(v) => Ok(Some(v)),
            Err(Error::File(mut e)) if is_damage(&e.kind) => {
                e.moved_to = Some(self.move_aside(&path, now)?);
                Err(Error::File(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Renames a damaged file to `<name>.corrupt-<secs>[-n]`, never over another.
    fn move_aside(&self, path: &Path, now: SystemTime) -> Result<PathBuf, Error> {
        let base = format!("{}.corrupt-{}", path.display(), unix_secs(now));
        for n in 0..1000u32 {
            let to = if n == 0 {
                PathBuf::from(&base)
            } else {
                PathBuf::from(format!("{base}-{n}"))
            };
            if fs::symlink_metadata(&to).is_ok() {
                continue;
            }
            fs::rename(path, &to).map_err(|e| io_error(path, "move aside", &e))?;
            sync_dir(&self.dir).map_err(|e| io_error(&self.dir, "fsync directory", &e))?;
            return Ok(to);
        }
        Err(io_error(
            path,
            "move aside",
            &io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    /// Replaces `name` atomically and durably; the caller holds the lock.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        let target = self.dir.join(name);
        self.remove_temp_files(name);
        let tmp = self.dir.join(format!("{name}.tmp-{}", std::process::id()));
        let result = (|| {
            let _ = fs::remove_file(&tmp);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io_error(&tmp, "create", &e))?;
            f.write_all(bytes)
                .map_err(|e| io_error(&tmp, "write", &e))?;
            f.sync_all().map_err(|e| io_error(&tmp, "fsync", &e))?;
            drop(f);
            fs::rename(&tmp, &target).map_err(|e| io_error(&target, "rename", &e))?;
            sync_dir(&self.dir).map_err(|e| io_error(&self.dir, "fsync directory", &e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes temporary files left by writers that crashed. Called with the lock held,
    /// so no live writer owns one.
    fn remove_temp_files(&self, name: &str) {
        let prefix = format!("{name}.tmp-");
        if let Ok(dir) = fs::read_dir(&self.dir) {
            for entry in dir.flatten().take(10_000) {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }

    fn lock(&self) -> Result<LockGuard, Error> {
        let path = self.dir.join(LOCK_FILE);
        let deadline = Instant::now() + self.config.lock_wait;
        // Never truncated on open: the holder's PID stays readable to waiters.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(&path, "open lock", &e))?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(Error::File(FileError {
                            kind: FileErrorKind::Locked {
                                pid: read_pid(&mut file),
                            },
                            path,
                            moved_to: None,
                        }));
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::Error(e)) => return Err(io_error(&path, "lock", &e)),
            }
        }
        // For the error a waiter reports; the lock does not depend on it, so a failure
        // to write it is not an error.
        let pid = std::process::id().to_string();
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()));
        Ok(LockGuard { _file: file })
    }
}

/// Holds the OS lock; closing the file on drop (also on error and panic) releases it.
struct LockGuard {
    _file: File,
}

/// The PID the lock's holder wrote, if it has written one yet.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    Read::by_ref(file).take(16).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// Whether an error means the file's content is damaged (so it is moved aside).
const fn is_damage(kind: &FileErrorKind) -> bool {
    matches!(
        kind,
        FileErrorKind::TooLarge { .. }
            | FileErrorKind::Syntax { .. }
            | FileErrorKind::WrongRoot { .. }
            | FileErrorKind::NewerVersion { .. }
            | FileErrorKind::Invalid { .. }
            | FileErrorKind::TooManyEntries { .. }
            | FileErrorKind::Tampered
    )
}

fn io_error(path: &Path, op: &'static str, e: &io::Error) -> Error {
    Error::File(FileError {
        path: path.to_owned(),
        kind: FileErrorKind::Io { op, kind: e.kind() },
        moved_to: None,
    })
}

/// Makes a rename in `dir` durable. Windows cannot open directories; there the
/// rename itself is as durable as the file system makes it.
fn sync_dir(dir: &Path) -> io::Result<()> {
    if cfg!(unix) {
        File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}
