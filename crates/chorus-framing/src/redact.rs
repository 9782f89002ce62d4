//! Redaction of what identifies a person in logs: peer addresses and user names.
//!
//! Every Chorus log line that names a peer wraps the value in [`Redacted`], which
//! prints `<redacted>` unless the embedder builds with the `log-sensitive` feature
//! (a debugging switch for one's own machines; str0m's `pii` module is the model).
//! The type of the value is kept, so a log line still says *what* was redacted.

use core::fmt;

/// A value shown in logs only with the `log-sensitive` feature.
///
/// ```
/// use chorus_framing::Redacted;
///
/// let peer: std::net::SocketAddr = "198.51.100.7:5000".parse()?;
/// let line = format!("allocation for {}", Redacted(peer));
/// if chorus_framing::LOG_SENSITIVE {
///     assert_eq!(line, "allocation for 198.51.100.7:5000");
/// } else {
///     assert_eq!(line, "allocation for <redacted>");
/// }
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

/// Whether this build logs addresses and names in clear (feature `log-sensitive`).
pub const LOG_SENSITIVE: bool = cfg!(feature = "log-sensitive");

impl<T: fmt::Display> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if LOG_SENSITIVE {
            self.0.fmt(f)
        } else {
            f.write_str("<redacted>")
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if LOG_SENSITIVE {
            self.0.fmt(f)
        } else {
            f.write_str("<redacted>")
        }
    }
}
