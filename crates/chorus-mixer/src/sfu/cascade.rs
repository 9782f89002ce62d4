//! Cascading: links to other relays, the streams announced over them, and the
//! upstream subscription of each relayed stream.

use std::time::Instant;

use super::slab::Key;
use super::{LegSecurity, Output, Peer, Sfu, SfuError};
use crate::Error;
use crate::control::Message;

impl Sfu {
    /// Adds a link to another relay, whose media is protected with `security` (the
    /// link's own SRTP keys in each direction), and announces every stream not
    /// learned from it.
    ///
    /// # Errors
    /// [`SfuError::DuplicatePeer`], [`SfuError::Limit`],
    /// [`SfuError::PlaintextRefused`].
    pub fn add_link(
        &mut self,
        id: u32,
        security: LegSecurity,
        out: &mut Output,
    ) -> Result<(), Error> {
        if self.links.contains(id) {
            return Err(SfuError::DuplicatePeer(Peer::Link(id)).into());
        }
        if self.links.len() >= self.config.max_links {
            return Err(SfuError::Limit("max_links").into());
        }
        let leg = self.leg(Peer::Link(id), security)?;
        self.legs.links.insert(id, leg);
        self.links.insert(id, id);
        for s in self.streams.values() {
            if s.origin != Peer::Link(id) {
                out.push_control(Peer::Link(id), &Message::Publish(s.info.clone()));
            }
        }
        Ok(())
    }

    /// Removes a link: streams learned from it are unpublished (and the other links
    /// told), and nothing more is forwarded to it.
    ///
    /// # Errors
    /// [`SfuError::UnknownPeer`].
    pub fn remove_link(&mut self, now: Instant, id: u32, out: &mut Output) -> Result<(), Error> {
        self.links
            .remove(id)
            .ok_or(SfuError::UnknownPeer(Peer::Link(id)))?;
        self.legs.links.remove(&id);
        self.wire.forget(Peer::Link(id));
        while let Some(sk) = self.first_stream_from(Peer::Link(id)) {
            self.remove_stream(now, sk, out);
        }
        for sk in self.streams.keys() {
            if let Some(s) = self.streams.get_mut(sk) {
                s.links.retain(|(l, _)| *l != id);
            }
            self.update_upstream(now, sk, out);
        }
        Ok(())
    }

    /// Subscribes on the origin link to exactly the layers needed here.
    pub(super) fn update_upstream(&mut self, now: Instant, sk: Key, out: &mut Output) {
        let Some(s) = self.streams.get_mut(sk) else {
            return;
        };
        let Peer::Link(link) = s.origin else { return };
        let needed = s.needed();
        if needed != s.upstream {
            // Newly subscribed layers are expected from now on.
            for (li, l) in s.layers.iter_mut().enumerate() {
                if needed & !s.upstream & (1 << li) != 0 {
                    l.heard = Some(now);
                }
            }
            s.upstream = needed;
            out.push_control(
                Peer::Link(link),
                &Message::Subscribe {
                    stream: s.info.stream,
                    layers: needed,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, sfu};
    use super::*;

    #[test]
    fn a_link_publish_of_a_known_stream_is_ignored() {
        let (mut s, mut out, now) = sfu();
        s.add_link(8, LegSecurity::Plaintext, &mut out).unwrap();
        out.clear();
        // Stream 1 is local; another relay announcing it (a loop) changes nothing.
        s.handle_control(
            now,
            Peer::Link(8),
            &Message::Publish(info(1, &[10, 11])),
            &mut out,
        )
        .unwrap();
        assert_eq!(s.origin(1), Some(Peer::Endpoint(1)));
        // An unpublish from a peer that is not the origin is ignored too.
        s.handle_control(
            now,
            Peer::Link(8),
            &Message::Unpublish { stream: 1 },
            &mut out,
        )
        .unwrap();
        assert_eq!(s.origin(1), Some(Peer::Endpoint(1)));
        assert!(out.is_empty());
    }
}
