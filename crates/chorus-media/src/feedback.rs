//! Receiver-side feedback for video: which packets to NACK (RFC 4585 §6.2.1) and when
//! to ask for a keyframe with a PLI (RFC 4585 §6.3.1). Sans-IO: time is passed in.
//!
//! Run loop: [`NackGenerator::handle_packet`] for every received packet; at
//! [`NackGenerator::poll_timeout`] (or after any input) drain
//! [`NackGenerator::poll_nack`] and send each list as a [`crate::rtcp::Packet::Nack`];
//! when [`NackGenerator::take_keyframe_request`] is `true`, send a PLI.

use core::time::Duration;
use std::collections::BTreeMap;
use std::time::Instant;

use crate::error::{Error, UsageError};
use crate::rtcp::NackEntry;
use crate::rtp::SequenceUnwrapper;

/// NACK policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NackConfig {
    /// Missing packets tracked at most; a larger gap asks for a keyframe instead.
    /// Default 256.
    pub max_missing: usize,
    /// Time between two NACKs of the same packet (about one RTT). Default 50 ms.
    pub retry_interval: Duration,
    /// NACKs per packet before giving up (and asking for a keyframe). Default 3.
    pub max_retries: u8,
}

impl Default for NackConfig {
    fn default() -> Self {
        Self {
            max_missing: 256,
            retry_interval: Duration::from_millis(50),
            max_retries: 3,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    sends: u8,
    next: Instant,
}

/// Tracks missing sequence numbers and schedules their NACKs.
#[derive(Debug)]
pub struct NackGenerator {
    config: NackConfig,
    unwrap: SequenceUnwrapper,
    highest: Option<u64>,
    missing: BTreeMap<u64, Missing>,
    keyframe: bool,
}

impl NackGenerator {
    /// A new generator; fails on an invalid configuration.
    pub fn new(config: NackConfig) -> Result<Self, Error> {
        if config.max_missing == 0 || config.max_retries == 0 {
            return Err(
                UsageError::InvalidConfig("max_missing and max_retries must be positive").into(),
            );
        }
        Ok(Self {
            config,
            unwrap: SequenceUnwrapper::new(),
            highest: None,
            missing: BTreeMap::new(),
            keyframe: false,
        })
    }

    /// Sequence numbers currently missing.
    #[must_use]
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// One received packet.
    pub fn handle_packet(&mut self, now: Instant, seq: u16) {
        let ext = self.unwrap.unwrap(seq);
        let Some(highest) = self.highest else {
            self.highest = Some(ext);
            return;
        };
        if ext <= highest {
            self.missing.remove(&ext);
            return;
        }
        let gap = ext - highest - 1;
        if gap as usize + self.missing.len() > self.config.max_missing {
            // Too much to repair packet by packet: start again from a keyframe.
            self.missing.clear();
            self.keyframe = true;
        } else {
            for s in highest + 1..ext {
                self.missing.insert(
                    s,
                    Missing {
                        sends: 0,
                        next: now,
                    },
                );
            }
        }
        self.highest = Some(ext);
    }

    /// The NACK entries due at `now`, or `None` when nothing is due.
    pub fn poll_nack(&mut self, now: Instant) -> Option<Vec<NackEntry>> {
        let mut due = Vec::new();
        let mut expired = Vec::new();
        for (&seq, m) in &mut self.missing {
            if m.next > now {
                continue;
            }
            if m.sends >= self.config.max_retries {
                expired.push(seq);
                continue;
            }
            m.sends += 1;
            m.next = now + self.config.retry_interval;
            due.push(seq as u16);
        }
        if !expired.is_empty() {
            for seq in expired {
                self.missing.remove(&seq);
            }
            self.keyframe = true;
        }
        (!due.is_empty()).then(|| NackEntry::from_lost(&due))
    }

    /// When a NACK or a give-up is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.missing.values().map(|m| m.next).min()
    }

    /// Whether a keyframe should be requested (PLI); resets the request.
    pub fn take_keyframe_request(&mut self) -> bool {
        core::mem::take(&mut self.keyframe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nacks_a_gap_retries_then_gives_up_with_a_keyframe_request() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(NackConfig::default()).unwrap();
        for s in [65_534u16, 65_535, 2, 3] {
            g.handle_packet(t0, s);
        }
        let nack = g.poll_nack(t0).unwrap();
        let lost: Vec<u16> = nack.iter().flat_map(|e| e.lost()).collect();
        assert_eq!(lost, [0, 1]);
        assert_eq!(g.poll_nack(t0), None, "not again before the retry interval");
        g.handle_packet(t0, 0); // the retransmission of 0 arrives
        let t1 = g.poll_timeout().unwrap();
        assert_eq!(t1, t0 + Duration::from_millis(50));
        assert_eq!(g.poll_nack(t1).unwrap(), vec![NackEntry { pid: 1, blp: 0 }]);
        let t2 = t1 + Duration::from_millis(50);
        assert!(g.poll_nack(t2).is_some());
        assert!(!g.take_keyframe_request());
        assert_eq!(g.poll_nack(t2 + Duration::from_millis(50)), None);
        assert!(g.take_keyframe_request(), "1 was given up");
        assert_eq!(g.missing(), 0);
    }

    #[test]
    fn a_huge_gap_asks_for_a_keyframe_instead() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(NackConfig::default()).unwrap();
        g.handle_packet(t0, 10);
        g.handle_packet(t0, 2000);
        assert_eq!(g.missing(), 0);
        assert!(g.take_keyframe_request());
        assert_eq!(g.poll_nack(t0), None);
    }
}
