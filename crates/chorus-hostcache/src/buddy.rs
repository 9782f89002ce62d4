//! The buddy list: contacts, their authorization state, groups, notes and last known
//! presence.
//!
//! Authorization follows Skype's contact requests:
//!
//! - [`BuddyList::request`] (we ask someone) makes a contact [`Authorization::PendingOut`];
//! - [`BuddyList::handle_request`] (someone asks us) makes it
//!   [`Authorization::PendingIn`], or [`Authorization::Authorized`] at once if we had
//!   asked them too; a request from a blocked user is ignored;
//! - [`BuddyList::accept`] and [`BuddyList::handle_accepted`] authorize;
//! - [`BuddyList::block`] blocks (adding the user if unknown, so their requests are
//!   ignored); [`BuddyList::unblock`] returns the contact to `PendingOut`, so the node
//!   asks again.
//!
//! Every text field is bounded ([`BuddyLimits`]) and free of control characters
//! (newlines and tabs are allowed in notes), so the list always fits `config.xml`.
//!
//! ```
//! use std::time::SystemTime;
//! use chorus_hostcache::buddy::{Authorization, BuddyList, BuddyLimits, Status};
//!
//! let mut buddies = BuddyList::new(BuddyLimits::default())?;
//! buddies.request("bob")?;
//! buddies.handle_accepted("bob")?;
//! buddies.set_display_name("bob", Some("Bob B."))?;
//! buddies.add_to_group("bob", "Friends")?;
//! buddies.update_presence("bob", Status::Online, SystemTime::UNIX_EPOCH)?;
//! assert_eq!(buddies.get("bob").unwrap().authorization, Authorization::Authorized);
//! assert!(buddies.may_contact_us("bob"));
//! buddies.block("mallory")?;
//! assert!(!buddies.may_contact_us("mallory"));
//! # Ok::<(), chorus_hostcache::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::error::{Error, Limit, UsageError};
use crate::hostcache::truncate_time;

/// Where a contact relationship stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Authorization {
    /// We asked them; they have not answered.
    PendingOut,
    /// They asked us; we have not answered.
    PendingIn,
    /// Both sides agreed: presence and calls flow.
    Authorized,
    /// We block them: their requests, calls and messages are ignored.
    Blocked,
}

impl Authorization {
    /// The name used in `config.xml`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PendingOut => "pending-out",
            Self::PendingIn => "pending-in",
            Self::Authorized => "authorized",
            Self::Blocked => "blocked",
        }
    }

    /// The state named `s` in `config.xml`.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "pending-out" => Self::PendingOut,
            "pending-in" => Self::PendingIn,
            "authorized" => Self::Authorized,
            "blocked" => Self::Blocked,
            _ => return None,
        })
    }
}

/// A presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Not connected.
    Offline,
    /// Connected and available.
    Online,
    /// Connected, away from the keyboard.
    Away,
    /// Connected, does not want calls.
    DoNotDisturb,
}

impl Status {
    /// The name used in `config.xml`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Online => "online",
            Self::Away => "away",
            Self::DoNotDisturb => "do-not-disturb",
        }
    }

    /// The status named `s` in `config.xml`.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "offline" => Self::Offline,
            "online" => Self::Online,
            "away" => Self::Away,
            "do-not-disturb" => Self::DoNotDisturb,
            _ => return None,
        })
    }
}

/// The last presence seen for a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// The status.
    pub status: Status,
    /// When it was seen (one-second resolution).
    pub at: SystemTime,
}

/// One contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The contact's Chorus username (the key).
    pub username: String,
    /// The name the user chose to show, if any.
    pub display_name: Option<String>,
    /// Groups the contact is in.
    pub groups: BTreeSet<String>,
    /// Where the relationship stands.
    pub authorization: Authorization,
    /// The user's notes.
    pub notes: String,
    /// Last known presence.
    pub presence: Option<Presence>,
}

impl Contact {
    /// A contact with no display name, groups, notes or presence.
    #[must_use]
    pub fn new(username: impl Into<String>, authorization: Authorization) -> Self {
        Self {
            username: username.into(),
            display_name: None,
            groups: BTreeSet::new(),
            authorization,
            notes: String::new(),
            presence: None,
        }
    }

    /// The name to show: the display name, else the username.
    #[must_use]
    pub fn shown_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.username)
    }
}

/// Bounds of a [`BuddyList`]. Validated by [`BuddyList::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuddyLimits {
    /// Most contacts. Default 10,000; 1 to 1,000,000.
    pub max_contacts: usize,
    /// Most groups per contact. Default 32.
    pub max_groups: usize,
    /// Longest username in bytes. Default 128.
    pub max_username_len: usize,
    /// Longest display name or group name in bytes. Default 256.
    pub max_name_len: usize,
    /// Longest notes in bytes. Default 4,096.
    pub max_notes_len: usize,
}

impl Default for BuddyLimits {
    fn default() -> Self {
        Self {
            max_contacts: 10_000,
            max_groups: 32,
            max_username_len: 128,
            max_name_len: 256,
            max_notes_len: 4096,
        }
    }
}

/// What [`BuddyList::handle_request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The request waits for the user's answer.
    Pending,
    /// We had asked them too: now authorized.
    Authorized,
    /// Already authorized; nothing changed.
    AlreadyAuthorized,
    /// The user is blocked; ignore the request silently.
    Ignored,
}

/// The buddy list. Performs no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuddyList {
    limits: BuddyLimits,
    contacts: BTreeMap<String, Contact>,
}

impl BuddyList {
    /// An empty list.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] if `max_contacts` is 0 or above 1,000,000.
    pub fn new(limits: BuddyLimits) -> Result<Self, Error> {
        if !(1..=1_000_000).contains(&limits.max_contacts) {
            return Err(UsageError::InvalidConfig("max_contacts must be 1 to 1,000,000").into());
        }
        Ok(Self {
            limits,
            contacts: BTreeMap::new(),
        })
    }

    /// The bounds.
    #[must_use]
    pub const fn limits(&self) -> &BuddyLimits {
        &self.limits
    }

    /// Number of contacts.
    #[must_use]
    pub fn len(&self) -> usize {
        self.contacts.len()
    }

    /// Whether there are no contacts.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
    }

    /// The contact `username`.
    #[must_use]
    pub fn get(&self, username: &str) -> Option<&Contact> {
        self.contacts.get(username)
    }

    /// All contacts, by username.
    pub fn iter(&self) -> impl Iterator<Item = &Contact> {
        self.contacts.values()
    }

    /// Authorized contacts: whose presence to watch and who may call.
    pub fn authorized(&self) -> impl Iterator<Item = &Contact> {
        self.iter()
            .filter(|c| c.authorization == Authorization::Authorized)
    }

    /// Requests waiting for the user's answer.
    pub fn pending_in(&self) -> impl Iterator<Item = &Contact> {
        self.iter()
            .filter(|c| c.authorization == Authorization::PendingIn)
    }

    /// Contacts in `group`.
    pub fn in_group<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Contact> + 'a {
        self.iter().filter(move |c| c.groups.contains(group))
    }

    /// Every group name in use.
    #[must_use]
    pub fn groups(&self) -> BTreeSet<&str> {
        self.iter()
            .flat_map(|c| c.groups.iter().map(String::as_str))
            .collect()
    }

    /// Whether `username` may send us requests, presence and calls: anyone not blocked.
    #[must_use]
    pub fn may_contact_us(&self, username: &str) -> bool {
        self.get(username)
            .is_none_or(|c| c.authorization != Authorization::Blocked)
    }

    /// Whether `username` may see our presence: authorized contacts only.
    #[must_use]
    pub fn may_see_presence(&self, username: &str) -> bool {
        self.get(username)
            .is_some_and(|c| c.authorization == Authorization::Authorized)
    }

    /// Inserts a complete contact (from `config.xml`, or a server backup), checking
    /// every bound.
    ///
    /// # Errors
    /// [`UsageError::AlreadyExists`] if the username is taken; [`Limit`] or
    /// [`UsageError::InvalidText`] for a field out of bounds.
    pub fn insert(&mut self, mut contact: Contact) -> Result<(), Error> {
        self.check_contact(&contact)?;
        if self.contacts.contains_key(&contact.username) {
            return Err(UsageError::AlreadyExists.into());
        }
        self.check_room()?;
        contact.presence = contact.presence.map(|p| Presence {
            at: truncate_time(p.at),
            ..p
        });
        self.contacts.insert(contact.username.clone(), contact);
        Ok(())
    }

    /// We ask `username` to become a contact: `PendingOut` (or `Authorized` if they had
    /// asked us). The node sends the request.
    ///
    /// # Errors
    /// [`UsageError::InvalidText`] or [`Limit`] for a bad username or a full list;
    /// [`UsageError::WrongState`] if the user is blocked (unblock first).
    pub fn request(&mut self, username: &str) -> Result<Authorization, Error> {
        match self.contacts.get_mut(username) {
            Some(c) => {
                c.authorization = match c.authorization {
                    Authorization::Blocked => {
                        return Err(UsageError::WrongState("contact is blocked").into());
                    }
                    Authorization::PendingIn | Authorization::Authorized => {
                        Authorization::Authorized
                    }
                    Authorization::PendingOut => Authorization::PendingOut,
                };
                Ok(c.authorization)
            }
            None => {
                self.insert(Contact::new(username, Authorization::PendingOut))?;
                Ok(Authorization::PendingOut)
            }
        }
    }

    /// `username` asks to become our contact.
    ///
    /// # Errors
    /// [`UsageError::InvalidText`] or [`Limit`] for a bad username or a full list.
    pub fn handle_request(&mut self, username: &str) -> Result<RequestOutcome, Error> {
        match self.contacts.get_mut(username) {
            Some(c) => Ok(match c.authorization {
                Authorization::Blocked => RequestOutcome::Ignored,
                Authorization::Authorized => RequestOutcome::AlreadyAuthorized,
                Authorization::PendingOut => {
                    c.authorization = Authorization::Authorized;
                    RequestOutcome::Authorized
                }
                Authorization::PendingIn => RequestOutcome::Pending,
            }),
            None => {
                self.insert(Contact::new(username, Authorization::PendingIn))?;
                Ok(RequestOutcome::Pending)
            }
        }
    }

    /// The user accepts `username`'s request.
    ///
    /// # Errors
    /// [`UsageError::NotFound`]; [`UsageError::WrongState`] unless `PendingIn`.
    pub fn accept(&mut self, username: &str) -> Result<(), Error> {
        let c = self.contact_mut(username)?;
        if c.authorization != Authorization::PendingIn {
            return Err(UsageError::WrongState("no request from this contact").into());
        }
        c.authorization = Authorization::Authorized;
        Ok(())
    }

    /// `username` accepted our request.
    ///
    /// # Errors
    /// [`UsageError::NotFound`]; [`UsageError::WrongState`] unless `PendingOut` or
    /// already authorized.
    pub fn handle_accepted(&mut self, username: &str) -> Result<(), Error> {
        let c = self.contact_mut(username)?;
        match c.authorization {
            Authorization::PendingOut | Authorization::Authorized => {
                c.authorization = Authorization::Authorized;
                Ok(())
            }
            _ => Err(UsageError::WrongState("we did not ask this contact").into()),
        }
    }

    /// Removes `username` (declining a pending request, or dropping a contact).
    ///
    /// # Errors
    /// [`UsageError::NotFound`].
    pub fn remove(&mut self, username: &str) -> Result<Contact, Error> {
        self.contacts
            .remove(username)
            .ok_or_else(|| UsageError::NotFound.into())
    }

    /// Blocks `username`, adding them if unknown.
    ///
    /// # Errors
    /// As [`BuddyList::insert`] when the user is new.
    pub fn block(&mut self, username: &str) -> Result<(), Error> {
        match self.contacts.get_mut(username) {
            Some(c) => {
                c.authorization = Authorization::Blocked;
                c.presence = None;
                Ok(())
            }
            None => self.insert(Contact::new(username, Authorization::Blocked)),
        }
    }

    /// Unblocks `username`: back to `PendingOut`, so the node asks again.
    ///
    /// # Errors
    /// [`UsageError::NotFound`]; [`UsageError::WrongState`] if not blocked.
    pub fn unblock(&mut self, username: &str) -> Result<(), Error> {
        let c = self.contact_mut(username)?;
        if c.authorization != Authorization::Blocked {
            return Err(UsageError::WrongState("contact is not blocked").into());
        }
        c.authorization = Authorization::PendingOut;
        Ok(())
    }

    /// Renames a contact locally (the display name; `None` shows the username).
    ///
    /// # Errors
    /// [`UsageError::NotFound`]; [`Limit::TextTooLong`] or [`UsageError::InvalidText`].
    pub fn set_display_name(&mut self, username: &str, name: Option<&str>) -> Result<(), Error> {
        if let Some(n) = name {
            check_text("display name", n, self.limits.max_name_len, false)?;
        }
        self.contact_mut(username)?.display_name = name.map(str::to_owned);
        Ok(())
    }

    /// Replaces a contact's notes.
    ///
    /// # Errors
    /// [`UsageError::NotFound`]; [`Limit::TextTooLong`] or [`UsageError::InvalidText`].
    pub fn set_notes(&mut self, username: &str, notes: &str) -> Result<(), Error> {
        check_text("notes", notes, self.limits.max_notes_len, true)?;
        notes.clone_into(&mut self.contact_mut(username)?.notes);
        Ok(())
    }

    /// Puts a contact in `group`.
    ///
    /// # Errors
    /// [`UsageError::NotFound`]; [`Limit::TooManyGroups`]; bad group name.
    pub fn add_to_group(&mut self, username: &str, group: &str) -> Result<(), Error> {
        check_name("group", group, self.limits.max_name_len)?;
        let max = self.limits.max_groups;
        let c = self.contact_mut(username)?;
        if !c.groups.contains(group) && c.groups.len() >= max {
            return Err(Limit::TooManyGroups { max }.into());
        }
        c.groups.insert(group.to_owned());
        Ok(())
    }

    /// Takes a contact out of `group` (no error if it was not in it).
    ///
    /// # Errors
    /// [`UsageError::NotFound`].
    pub fn remove_from_group(&mut self, username: &str, group: &str) -> Result<(), Error> {
        self.contact_mut(username)?.groups.remove(group);
        Ok(())
    }

    /// Renames `from` to `to` for every contact in it. Returns how many changed.
    ///
    /// # Errors
    /// Bad group name.
    pub fn rename_group(&mut self, from: &str, to: &str) -> Result<usize, Error> {
        check_name("group", to, self.limits.max_name_len)?;
        let mut n = 0;
        for c in self.contacts.values_mut() {
            if c.groups.remove(from) {
                c.groups.insert(to.to_owned());
                n += 1;
            }
        }
        Ok(n)
    }

    /// Records presence seen for an authorized contact (others' presence is ignored:
    /// they are not allowed to publish it to us). Returns whether it was recorded.
    ///
    /// # Errors
    /// [`UsageError::NotFound`].
    pub fn update_presence(
        &mut self,
        username: &str,
        status: Status,
        at: SystemTime,
    ) -> Result<bool, Error> {
        let c = self.contact_mut(username)?;
        if c.authorization != Authorization::Authorized {
            return Ok(false);
        }
        c.presence = Some(Presence {
            status,
            at: truncate_time(at),
        });
        Ok(true)
    }

    fn contact_mut(&mut self, username: &str) -> Result<&mut Contact, Error> {
        self.contacts
            .get_mut(username)
            .ok_or_else(|| UsageError::NotFound.into())
    }

    fn check_room(&self) -> Result<(), Error> {
        if self.contacts.len() >= self.limits.max_contacts {
            return Err(Limit::TooManyContacts {
                max: self.limits.max_contacts,
            }
            .into());
        }
        Ok(())
    }

    fn check_contact(&self, c: &Contact) -> Result<(), Error> {
        let l = &self.limits;
        check_name("username", &c.username, l.max_username_len)?;
        if let Some(n) = &c.display_name {
            check_text("display name", n, l.max_name_len, false)?;
        }
        check_text("notes", &c.notes, l.max_notes_len, true)?;
        if c.groups.len() > l.max_groups {
            return Err(Limit::TooManyGroups { max: l.max_groups }.into());
        }
        for g in &c.groups {
            check_name("group", g, l.max_name_len)?;
        }
        Ok(())
    }
}

/// A non-empty name without surrounding whitespace or control characters.
fn check_name(field: &'static str, s: &str, max: usize) -> Result<(), Error> {
    check_text(field, s, max, false)?;
    if s.is_empty() || s.trim() != s {
        return Err(UsageError::InvalidText(field).into());
    }
    Ok(())
}

/// Bounded text without control characters (`multiline` allows `\n` and `\t`).
fn check_text(field: &'static str, s: &str, max: usize, multiline: bool) -> Result<(), Error> {
    if s.len() > max {
        return Err(Limit::TextTooLong {
            field,
            len: s.len(),
            max,
        }
        .into());
    }
    let allowed = |ch: char| !ch.is_control() || (multiline && (ch == '\n' || ch == '\t'));
    // U+FFFE/U+FFFF are not XML characters either.
    if !s
        .chars()
        .all(|ch| allowed(ch) && ch != '\u{fffe}' && ch != '\u{ffff}')
    {
        return Err(UsageError::InvalidText(field).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> BuddyList {
        BuddyList::new(BuddyLimits::default()).unwrap()
    }

    #[test]
    fn mutual_requests_authorize_without_an_answer() {
        let mut b = list();
        assert_eq!(b.request("bob").unwrap(), Authorization::PendingOut);
        assert_eq!(b.handle_request("bob").unwrap(), RequestOutcome::Authorized);
        assert_eq!(
            b.handle_request("bob").unwrap(),
            RequestOutcome::AlreadyAuthorized
        );
        assert!(b.may_see_presence("bob"));
    }

    #[test]
    fn incoming_requests_wait_for_the_user() {
        let mut b = list();
        assert_eq!(b.handle_request("carol").unwrap(), RequestOutcome::Pending);
        assert_eq!(b.handle_request("carol").unwrap(), RequestOutcome::Pending);
        assert_eq!(b.pending_in().count(), 1);
        assert!(!b.may_see_presence("carol"));
        b.accept("carol").unwrap();
        assert_eq!(b.authorized().count(), 1);
        assert!(b.accept("carol").is_err());
        assert_eq!(b.request("carol").unwrap(), Authorization::Authorized);
    }

    #[test]
    fn blocked_users_are_ignored_until_unblocked() {
        let mut b = list();
        b.block("mallory").unwrap();
        assert_eq!(
            b.handle_request("mallory").unwrap(),
            RequestOutcome::Ignored
        );
        assert!(b.request("mallory").is_err());
        assert!(
            !b.update_presence("mallory", Status::Online, SystemTime::UNIX_EPOCH)
                .unwrap()
        );
        b.unblock("mallory").unwrap();
        assert_eq!(
            b.get("mallory").unwrap().authorization,
            Authorization::PendingOut
        );
        assert!(b.unblock("mallory").is_err());
        b.handle_accepted("mallory").unwrap();
        b.block("mallory").unwrap();
        assert!(b.handle_accepted("mallory").is_err());
    }

    #[test]
    fn groups_rename_and_remove() {
        let mut b = list();
        b.request("bob").unwrap();
        b.request("dave").unwrap();
        b.add_to_group("bob", "Work").unwrap();
        b.add_to_group("dave", "Work").unwrap();
        b.add_to_group("dave", "Family").unwrap();
        assert_eq!(b.rename_group("Work", "Office").unwrap(), 2);
        assert_eq!(b.in_group("Office").count(), 2);
        assert_eq!(
            b.groups().into_iter().collect::<Vec<_>>(),
            ["Family", "Office"]
        );
        b.remove_from_group("dave", "Office").unwrap();
        assert_eq!(b.in_group("Office").count(), 1);
        b.set_display_name("bob", Some("Robert")).unwrap();
        assert_eq!(b.get("bob").unwrap().shown_name(), "Robert");
        b.set_notes("bob", "met at\tFOSDEM\n2024").unwrap();
        assert_eq!(b.remove("bob").unwrap().notes, "met at\tFOSDEM\n2024");
        assert!(b.remove("bob").is_err());
    }

    #[test]
    fn bounds_and_bad_text_are_refused() {
        let limits = BuddyLimits {
            max_contacts: 2,
            max_groups: 1,
            ..BuddyLimits::default()
        };
        let mut b = BuddyList::new(limits).unwrap();
        b.request("a").unwrap();
        b.request("b").unwrap();
        assert_eq!(
            b.request("c").unwrap_err(),
            Error::Limit(Limit::TooManyContacts { max: 2 })
        );
        b.add_to_group("a", "x").unwrap();
        assert_eq!(
            b.add_to_group("a", "y").unwrap_err(),
            Error::Limit(Limit::TooManyGroups { max: 1 })
        );
        assert!(matches!(
            b.set_notes("a", &"n".repeat(5000)),
            Err(Error::Limit(Limit::TextTooLong { .. }))
        ));
        assert!(matches!(
            b.set_display_name("a", Some("bell\u{7}")),
            Err(Error::Usage(UsageError::InvalidText(_)))
        ));
        assert!(matches!(
            b.add_to_group("a", " padded"),
            Err(Error::Usage(UsageError::InvalidText(_)))
        ));
        assert!(matches!(
            b.set_notes("zed", ""),
            Err(Error::Usage(UsageError::NotFound))
        ));
        let mut fresh = list();
        assert!(matches!(
            fresh.request(""),
            Err(Error::Usage(UsageError::InvalidText(_)))
        ));
        assert!(matches!(
            fresh.request("a\nb"),
            Err(Error::Usage(UsageError::InvalidText(_)))
        ));
        fresh.request("x").unwrap();
        assert_eq!(
            fresh
                .insert(Contact::new("x", Authorization::Authorized))
                .unwrap_err(),
            Error::Usage(UsageError::AlreadyExists)
        );
        let zero = BuddyLimits {
            max_contacts: 0,
            ..BuddyLimits::default()
        };
        assert!(BuddyList::new(zero).is_err());
    }
}
