//! Fuzz entry point for the mixer's input: arbitrary datagrams from two remote
//! participants, interleaved with ticks.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Mixer, MixerConfig, RemoteConfig};

/// Splits `data` into datagrams (a length byte, then that many bytes), feeds them
/// alternately to two participants and ticks after every fourth. Never panics.
pub fn mixer_input(data: &[u8]) {
    let Ok(mut mixer) = Mixer::new(MixerConfig::default()) else {
        return;
    };
    let (Ok(a), Ok(b)) = (
        mixer.add_remote(RemoteConfig::default()),
        mixer.add_remote(RemoteConfig::default()),
    ) else {
        return;
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut rest = data;
    let mut n = 0u32;
    while let Some((&len, tail)) = rest.split_first() {
        let (datagram, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        let to = if n.is_multiple_of(2) { a } else { b };
        let _ = mixer.handle_packet(now, to, Bytes::copy_from_slice(datagram));
        n += 1;
        if n.is_multiple_of(4) {
            now += Duration::from_millis(20);
            mixer.tick(now);
            assert!(mixer.transmits().count() <= 2);
        }
    }
}
