//! Fuzz entry points (private feature `_fuzz`; also run under proptest by the tests).
//! Each loader must never panic, and whatever loads must re-encode to a document that
//! loads to the same value.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::xml::{ConfigFile, Limits, SharedFile};

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// Loads arbitrary bytes as `shared.xml`; round-trips what loads.
pub fn shared_xml(data: &[u8]) {
    let limits = Limits::default();
    let path = Path::new("shared.xml");
    if let Ok(file) = SharedFile::decode(data, path, &limits, now()) {
        let again = file.encode();
        let back = SharedFile::decode(again.as_bytes(), path, &limits, now());
        assert_eq!(back.as_ref().ok(), Some(&file), "re-encoded:\n{again}");
    }
}

/// Loads arbitrary bytes as a plaintext `config.xml`; round-trips what loads.
pub fn config_xml(data: &[u8]) {
    let limits = Limits::default();
    let path = Path::new("config.xml");
    if let Ok(file) = ConfigFile::decode(data, path, &limits) {
        let again = file.encode();
        let back = ConfigFile::decode(again.as_bytes(), path, &limits);
        assert_eq!(back.as_ref().ok(), Some(&file), "re-encoded:\n{again}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    const SAMPLE_SHARED: &str = include_str!("../../../docs/files/shared.xml");
    const SAMPLE_CONFIG: &str = include_str!("../../../docs/files/config.xml");

    #[test]
    fn samples_pass_the_oracles() {
        shared_xml(SAMPLE_SHARED.as_bytes());
        config_xml(SAMPLE_CONFIG.as_bytes());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_loaders(data in vec(any::<u8>(), 0..1024)) {
            shared_xml(&data);
            config_xml(&data);
        }

        #[test]
        fn mutated_samples_never_panic_the_loaders(
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            for doc in [SAMPLE_SHARED, SAMPLE_CONFIG] {
                let mut b = doc.as_bytes().to_vec();
                let i = flip.index(b.len());
                b[i] = byte;
                shared_xml(&b);
                config_xml(&b);
                let b = &doc.as_bytes()[..cut.index(doc.len())];
                shared_xml(b);
                config_xml(b);
            }
        }
    }
}
