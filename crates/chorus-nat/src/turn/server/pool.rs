//! The relay port pool: one bitmap of ports in use per relay IP address.

use std::net::{IpAddr, SocketAddr};

/// Ports `first..=last` on one IP; a set bit means taken (allocated, reserved, or
/// found unbindable).
#[derive(Debug)]
pub(super) struct Pool {
    pub(super) ip: IpAddr,
    first: u16,
    len: u32,
    used: Vec<u64>,
    in_use: u32,
}

impl Pool {
    pub(super) fn new(ip: IpAddr, first: u16, last: u16) -> Self {
        let len = u32::from(last) - u32::from(first) + 1;
        Self {
            ip,
            first,
            len,
            used: vec![0; (len as usize).div_ceil(64)],
            in_use: 0,
        }
    }

    fn index(&self, port: u16) -> Option<u32> {
        let i = u32::from(port).checked_sub(u32::from(self.first))?;
        (i < self.len).then_some(i)
    }

    fn is_used(&self, i: u32) -> bool {
        self.used
            .get((i / 64) as usize)
            .is_none_or(|w| w & (1 << (i % 64)) != 0)
    }

    fn set(&mut self, i: u32, used: bool) {
        if let Some(w) = self.used.get_mut((i / 64) as usize) {
            let bit = 1u64 << (i % 64);
            let was = *w & bit != 0;
            if used {
                *w |= bit;
            } else {
                *w &= !bit;
            }
            match (was, used) {
                (false, true) => self.in_use += 1,
                (true, false) => self.in_use -= 1,
                _ => {}
            }
        }
    }

    /// Whether every port is taken.
    pub(super) fn is_full(&self) -> bool {
        self.in_use >= self.len
    }

    /// Takes a free port, scanning from `start` (a random offset). `even` asks for an
    /// even port; `pair` for an even port whose successor is free too (both are taken).
    pub(super) fn take(&mut self, start: u32, even: bool, pair: bool) -> Option<SocketAddr> {
        if self.is_full() {
            return None;
        }
        let even = even || pair;
        for k in 0..self.len {
            let i = (start.wrapping_add(k)) % self.len;
            let port = u32::from(self.first) + i;
            if self.is_used(i) || (even && !port.is_multiple_of(2)) {
                continue;
            }
            if pair {
                let Some(next) = i.checked_add(1).filter(|n| *n < self.len) else {
                    continue;
                };
                if self.is_used(next) {
                    continue;
                }
                self.set(next, true);
            }
            self.set(i, true);
            return Some(SocketAddr::new(self.ip, port as u16));
        }
        None
    }

    /// Marks a specific port taken (a claimed reservation is already taken).
    pub(super) fn release(&mut self, port: u16) {
        if let Some(i) = self.index(port) {
            self.set(i, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_every_port_once_then_reports_full() {
        let mut p = Pool::new("127.0.0.1".parse().unwrap(), 50000, 50003);
        let mut got: Vec<u16> = (0..4)
            .map(|k| p.take(k * 7, false, false).unwrap().port())
            .collect();
        got.sort_unstable();
        assert_eq!(got, [50000, 50001, 50002, 50003]);
        assert!(p.is_full());
        assert_eq!(p.take(0, false, false), None);
        p.release(50002);
        assert_eq!(p.take(0, false, false).unwrap().port(), 50002);
        p.release(1); // outside the range: ignored
    }

    #[test]
    fn even_ports_and_pairs() {
        let mut p = Pool::new("127.0.0.1".parse().unwrap(), 50001, 50005);
        let a = p.take(0, false, true).unwrap().port();
        assert_eq!(a, 50002); // 50002 and 50003 taken together
        assert_eq!(p.take(0, true, false).unwrap().port(), 50004);
        // 50005 is odd and 50006 is outside the range: no pair left.
        assert_eq!(p.take(0, false, true), None);
        assert_eq!(p.take(0, false, false).unwrap().port(), 50001);
    }
}
