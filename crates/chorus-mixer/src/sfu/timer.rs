//! The relay's timers: a table of relay-wide deadlines (quinn-proto's
//! `connection/timer.rs`) and the per-stream deadlines each subsystem computes from
//! its own state; [`Sfu::poll_timeout`] is the earliest of them and
//! [`Sfu::handle_timeout`] hands each subsystem its turn.

use std::time::Instant;

use super::{Output, Sfu};

/// A relay-wide timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The next round of receiver reports to local senders (`reports`).
    Report = 0,
}

impl Timer {
    /// Number of timers.
    const COUNT: usize = 1;
}

/// When each relay-wide timer fires, if it is running.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TimerTable {
    data: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    /// Starts (or moves) `timer` to fire at `time`.
    pub(super) fn set(&mut self, timer: Timer, time: Instant) {
        self.data[timer as usize] = Some(time);
    }

    /// Starts `timer` at `time` unless it is already running.
    pub(super) fn start(&mut self, timer: Timer, time: Instant) {
        self.data[timer as usize].get_or_insert(time);
    }

    /// Stops `timer`.
    pub(super) fn stop(&mut self, timer: Timer) {
        self.data[timer as usize] = None;
    }

    /// When `timer` fires, if it is running.
    pub(super) const fn get(&self, timer: Timer) -> Option<Instant> {
        self.data[timer as usize]
    }

    /// Whether `timer` is running and due at `now`.
    pub(super) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| now >= t)
    }

    /// The earliest running timer.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().flatten().min().copied()
    }
}

impl Sfu {
    /// Sends the keyframe requests whose aggregation interval has ended, repeats
    /// those for switches still waiting, and takes silent layers out of selection.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Output) {
        if self.timers.is_expired(Timer::Report, now) {
            self.send_receiver_reports(now, out);
        }
        self.expire_silent_layers(now, out);
        self.send_due_keyframe_requests(now, out);
    }

    /// When [`Sfu::handle_timeout`] has work: the end of the earliest aggregation
    /// interval with a request pending or a switch waiting, or the time an expected
    /// layer would count as silent.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let interval = self.config.keyframe_interval;
        let timeout = self.config.layer_timeout;
        self.streams
            .values()
            .filter_map(|s| {
                let silence = s.silence_deadline(timeout);
                let keyframe = s.keyframe_deadline(interval);
                silence.into_iter().chain(keyframe).min()
            })
            .chain(self.timers.next_timeout())
            .min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_table_gives_the_earliest_running_timer() {
        let now = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.start(Timer::Report, now + Duration::from_secs(1));
        // Already running: not moved.
        t.start(Timer::Report, now + Duration::from_secs(5));
        assert_eq!(t.next_timeout(), Some(now + Duration::from_secs(1)));
        assert!(!t.is_expired(Timer::Report, now));
        assert!(t.is_expired(Timer::Report, now + Duration::from_secs(1)));
        t.set(Timer::Report, now + Duration::from_secs(2));
        assert_eq!(t.get(Timer::Report), Some(now + Duration::from_secs(2)));
        t.stop(Timer::Report);
        assert_eq!(t.next_timeout(), None);
        assert!(!t.is_expired(Timer::Report, now + Duration::from_secs(9)));
    }
}
