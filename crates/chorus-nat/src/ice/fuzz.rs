//! Fuzz entry point for the ICE candidate and description parser (STYLE.md §10).

use super::{Candidate, Description};

/// Most candidates the fuzzed parser accepts.
const MAX: usize = 32;

/// Parse a description, encode it, parse it again: equal results; and every parsed
/// candidate's line parses back to the same candidate.
///
/// # Panics
/// When the oracle fails, which is the bug a fuzzer reports.
pub fn ice_candidate(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let _ = Candidate::parse(text);
    if let Ok(d) = Description::parse(text, MAX) {
        for c in &d.candidates {
            assert_eq!(Candidate::parse(&c.to_line()), Ok(Some(c.clone())));
        }
        assert_eq!(Description::parse(&d.encode(), MAX), Ok(d));
    }
}
