//! The crate's error type: a peer's bad datagram, a damaged file, a local limit and the
//! caller's mistake, kept apart.

use core::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use chorus_framing::DecodeError;
use chorus_framing::EntropyError;

/// Everything that can go wrong in `chorus-hostcache`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A datagram from the network that is not a valid Chorus datagram.
    Decode(DecodeError),
    /// A valid datagram that is not acceptable now (an unsolicited probe reply).
    Protocol(Violation),
    /// A configured bound was reached (cache, contacts, groups, text lengths).
    Limit(Limit),
    /// The caller asked for something that cannot be done.
    Usage(UsageError),
    /// A file could not be read, written or understood. Names the file and, for
    /// content errors, the position.
    File(FileError),
    /// The injected entropy source failed.
    Entropy(EntropyError),
}

/// A valid datagram that is not acceptable now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A datagram type other than `ProbeReply` arrived during bootstrap.
    UnexpectedType(u8),
    /// A `ProbeReply` from an address with no probe in flight, or with the wrong nonce.
    Unsolicited,
}

/// A configured bound was reached. The operation was refused; state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// The buddy list holds its maximum number of contacts.
    TooManyContacts {
        /// The configured maximum.
        max: usize,
    },
    /// A contact is in its maximum number of groups.
    TooManyGroups {
        /// The configured maximum.
        max: usize,
    },
    /// A text field (username, display name, group, notes) is too long.
    TextTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
}

/// A request the caller made that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// A configuration value outside its documented bounds.
    InvalidConfig(&'static str),
    /// An address no super node can have (unspecified, multicast, broadcast, port 0).
    InvalidAddress(SocketAddr),
    /// No entry or contact with this key.
    NotFound,
    /// The contact already exists.
    AlreadyExists,
    /// A username, group or text field with characters that are not allowed (control
    /// characters, or empty where a value is required).
    InvalidText(&'static str),
    /// A TCP outcome for an attempt the bootstrap procedure is not waiting for.
    UnknownAttempt(u64),
    /// The operation does not apply in the current state.
    WrongState(&'static str),
}

/// A file that could not be read, written or understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: FileErrorKind,
    /// Where the damaged file was moved so that nothing is lost (`<name>.corrupt-<unix
    /// seconds>`), if it was.
    pub moved_to: Option<PathBuf>,
}

/// A position in a file: a byte offset, and the line and column (both from 1) it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Byte offset from the start of the file.
    pub offset: usize,
    /// Line, from 1.
    pub line: usize,
    /// Column in bytes, from 1.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text`.
    #[must_use]
    pub fn locate(text: &[u8], offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or_default();
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        Self {
            offset,
            line,
            column: offset - line_start + 1,
        }
    }
}

/// What went wrong with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileErrorKind {
    /// The operating system refused an operation.
    Io {
        /// What was being done ("read", "rename", ...).
        op: &'static str,
        /// The system's error kind.
        kind: io::ErrorKind,
    },
    /// The file is larger than the configured maximum; it was not parsed.
    TooLarge {
        /// Its length in bytes.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// Not well-formed XML (including invalid UTF-8 and a truncated file).
    Syntax {
        /// Where.
        position: Position,
        /// What the parser found.
        detail: String,
    },
    /// Well-formed XML whose root element is not the expected one.
    WrongRoot {
        /// The element expected.
        expected: &'static str,
        /// The element found.
        found: String,
    },
    /// Written by a newer major version of the format, which this version cannot read.
    NewerVersion {
        /// The version in the file.
        found: String,
        /// The version this implementation writes.
        supported: &'static str,
    },
    /// Well-formed XML with a value that is not allowed (an invalid address, a
    /// duplicated entry, a missing attribute).
    Invalid {
        /// Where: the start of the offending element.
        position: Position,
        /// What is wrong.
        detail: String,
    },
    /// More entries (host cache nodes, contacts, unknown elements) than allowed.
    TooManyEntries {
        /// What kind of entry.
        what: &'static str,
        /// The maximum.
        max: usize,
    },
    /// Another live process holds the lock file for longer than the configured wait.
    Locked {
        /// The process id written in the lock file, if readable.
        pid: Option<u32>,
    },
    /// The file is encrypted and no password was given.
    PasswordRequired,
    /// The password does not open the encrypted file.
    WrongPassword,
    /// The encrypted file was altered or damaged (the password is right).
    Tampered,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "invalid datagram: {e}"),
            Self::Protocol(e) => write!(f, "protocol violation: {e}"),
            Self::Limit(e) => write!(f, "limit reached: {e}"),
            Self::Usage(e) => write!(f, "invalid request: {e}"),
            Self::File(e) => write!(f, "{e}"),
            Self::Entropy(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedType(t) => write!(f, "unexpected datagram type {t:#04x}"),
            Self::Unsolicited => f.write_str("probe reply that answers no probe in flight"),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyContacts { max } => write!(f, "more than {max} contacts"),
            Self::TooManyGroups { max } => write!(f, "more than {max} groups for one contact"),
            Self::TextTooLong { field, len, max } => {
                write!(f, "{field} of {len} bytes; at most {max} allowed")
            }
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
            Self::InvalidAddress(a) => write!(f, "{a} cannot be a super node address"),
            Self::NotFound => f.write_str("no such entry"),
            Self::AlreadyExists => f.write_str("already exists"),
            Self::InvalidText(what) => write!(f, "invalid {what}"),
            Self::UnknownAttempt(id) => write!(f, "no TCP attempt {id} in flight"),
            Self::WrongState(what) => write!(f, "not allowed now: {what}"),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {} (byte {})",
            self.line, self.column, self.offset
        )
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)?;
        if let Some(to) = &self.moved_to {
            write!(f, "; the file was moved to {}", to.display())?;
        }
        Ok(())
    }
}

impl fmt::Display for FileErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { op, kind } => write!(f, "{op} failed: {kind}"),
            Self::TooLarge { len, max } => {
                write!(
                    f,
                    "file of {len} bytes is larger than the {max}-byte maximum"
                )
            }
            Self::Syntax { position, detail } => write!(f, "not valid XML at {position}: {detail}"),
            Self::WrongRoot { expected, found } => {
                write!(f, "root element <{found}> where <{expected}> was expected")
            }
            Self::NewerVersion { found, supported } => write!(
                f,
                "written by a newer version (format {found}); this version reads {supported}"
            ),
            Self::Invalid { position, detail } => {
                write!(f, "invalid content at {position}: {detail}")
            }
            Self::TooManyEntries { what, max } => write!(f, "more than {max} {what}"),
            Self::Locked { pid: Some(pid) } => write!(f, "locked by process {pid}"),
            Self::Locked { pid: None } => f.write_str("locked by another process"),
            Self::PasswordRequired => f.write_str("the file is encrypted; a password is required"),
            Self::WrongPassword => f.write_str("wrong password"),
            Self::Tampered => f.write_str("the encrypted file was altered or damaged"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Decode(e) => Some(e),
            Self::Protocol(e) => Some(e),
            Self::Limit(e) => Some(e),
            Self::Usage(e) => Some(e),
            Self::File(e) => Some(e),
            Self::Entropy(e) => Some(e),
        }
    }
}
impl std::error::Error for Violation {}
impl std::error::Error for Limit {}
impl std::error::Error for UsageError {}
impl std::error::Error for FileError {}

macro_rules! from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Self::$v(e)
            }
        }
    )*};
}
from!(DecodeError => Decode, Violation => Protocol, Limit => Limit, UsageError => Usage, FileError => File, EntropyError => Entropy);
