//! The XML formats of `shared.xml` and `config.xml` (byte-level: no files here; see
//! [`crate::store`] for the disk). The formats are documented in `docs/files.md`.
//!
//! Each document is a root element with a `version="MAJOR.MINOR"` attribute and known
//! sections as its children. The rules for compatibility:
//!
//! - a newer **major** version cannot be read ([`FileErrorKind::NewerVersion`]);
//! - a newer **minor** version may only add new top-level sections; this version keeps
//!   such sections byte for byte ([`Preserved`]) and writes them back unchanged.
//!   Unknown attributes and children *inside* known sections are ignored.
//!
//! Input is hostile: it is checked against [`Limits`] (size first, before parsing),
//! `<!DOCTYPE>` is refused (no entity tricks), every value is validated, duplicated
//! entries are errors, and nothing panics. Errors carry the byte offset, line and
//! column.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use serde::{Deserialize, Serialize};

use crate::buddy::{Authorization, BuddyLimits, BuddyList, Contact, Presence, Status};
use crate::error::{Error, FileError, FileErrorKind, Position};
use crate::hostcache::{CacheConfig, Entry, HostCache, Source, unix_secs, validate_addr};
use crate::nat::{Behaviour, ClassicNat, NatInfo};

/// The format version this implementation writes (both files).
pub const FORMAT_VERSION: &str = "1.0";
/// The major version this implementation reads.
const MAJOR: u32 = 1;
/// Root element of `shared.xml`.
pub const SHARED_ROOT: &str = "shared";
/// Root element of `config.xml`.
pub const CONFIG_ROOT: &str = "config";

/// Bounds on what a file may contain. Part of [`crate::store::StoreConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest file read, in bytes; larger ones are refused before parsing. Default
    /// 8 MiB.
    pub max_file_len: usize,
    /// Most `<node>` elements read from `shared.xml`. Default 10,000 (the cache then
    /// keeps what its own bound allows).
    pub max_nodes: usize,
    /// Most unknown top-level elements kept from a newer minor version. Default 64.
    pub max_unknown: usize,
    /// The host cache policy applied to what is read.
    pub cache: CacheConfig,
    /// The buddy list bounds applied to what is read.
    pub buddies: BuddyLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_len: 8 << 20,
            max_nodes: 10_000,
            max_unknown: 64,
            cache: CacheConfig::default(),
            buddies: BuddyLimits::default(),
        }
    }
}

/// Top-level elements from a newer minor version, kept verbatim and written back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preserved(Vec<String>);

impl Preserved {
    /// Number of preserved elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw XML of each element.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// The contents of `shared.xml`: the host cache and the NAT info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// The host cache.
    pub host_cache: HostCache,
    /// The last NAT discovery result, if any.
    pub nat: Option<NatInfo>,
    /// Sections from a newer minor version.
    pub preserved: Preserved,
}

/// User settings in `config.xml`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Settings {
    /// The user's Chorus username, once chosen.
    pub username: Option<String>,
    /// The TCP and UDP port to listen on (there is no default, as in Skype).
    pub listen_port: Option<u16>,
    /// Also try ports 80 and 443. Default off.
    pub alternative_ports: bool,
    /// Whether this node may become a super node. Default off (a peer may decline).
    pub allow_super_node: bool,
    /// Whether non-contacts may learn this node's IP address (otherwise relay first).
    /// Default off.
    pub reveal_address_to_strangers: bool,
}

/// The contents of `config.xml`: the buddy list and the user settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// User settings.
    pub settings: Settings,
    /// The buddy list.
    pub buddies: BuddyList,
    /// Sections from a newer minor version.
    pub preserved: Preserved,
}

impl SharedFile {
    /// An empty file under `limits`.
    ///
    /// # Errors
    /// If `limits.cache` is invalid.
    pub fn new(limits: &Limits) -> Result<Self, Error> {
        Ok(Self {
            host_cache: HostCache::new(limits.cache.clone())?,
            nat: None,
            preserved: Preserved::default(),
        })
    }

    /// The document's bytes.
    #[must_use]
    pub fn encode(&self) -> String {
        let nodes = self
            .host_cache
            .iter()
            .map(|e| NodeXml {
                addr: e.addr.to_string(),
                source: e.source.as_str().to_owned(),
                first_seen: unix_secs(e.first_seen),
                last_seen: unix_secs(e.last_seen),
                last_success: e.last_success.map(unix_secs),
                last_attempt: e.last_attempt.map(unix_secs),
                successes: e.successes,
                failures: e.failures,
                consecutive_failures: e.consecutive_failures,
                rtt_ms: e
                    .last_rtt
                    .map(|r| u32::try_from(r.as_millis()).unwrap_or(u32::MAX)),
            })
            .collect();
        let mut out = header(SHARED_ROOT);
        push_section(&mut out, "hostcache", &HostCacheXml { node: nodes });
        if let Some(n) = &self.nat {
            let nat = NatXml {
                discovered: unix_secs(n.discovered_at),
                classic: n.classic.as_str().to_owned(),
                mapping: n.mapping.map(|b| b.as_str().to_owned()),
                filtering: n.filtering.map(|b| b.as_str().to_owned()),
                mapped: n.mapped_address.map(|a| a.to_string()),
            };
            push_section(&mut out, "nat", &nat);
        }
        footer(&mut out, SHARED_ROOT, &self.preserved);
        out
    }

    /// Parses `shared.xml`. `path` only names the file in errors; `now` ranks entries
    /// if the file holds more than the cache keeps.
    ///
    /// # Errors
    /// [`Error::File`] with a [`FileErrorKind`] naming what is wrong and where.
    pub fn decode(
        bytes: &[u8],
        path: &Path,
        limits: &Limits,
        now: SystemTime,
    ) -> Result<Self, Error> {
        let fail = |kind| {
            Error::File(FileError {
                path: path.to_owned(),
                kind,
                moved_to: None,
            })
        };
        let doc = Document::parse(bytes, SHARED_ROOT, limits).map_err(fail)?;
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut nat = None;
        for s in &doc.sections {
            match s.name.as_str() {
                "hostcache" => {
                    let x: HostCacheXml = s.deserialize(bytes).map_err(fail)?;
                    if x.node.len() > limits.max_nodes {
                        return Err(fail(FileErrorKind::TooManyEntries {
                            what: "host cache nodes",
                            max: limits.max_nodes,
                        }));
                    }
                    for (i, n) in x.node.into_iter().enumerate() {
                        // Positions are found only for errors: finding each is a scan.
                        let at = || s.child_position(bytes, "<node", i);
                        let e = n.into_entry().map_err(|d| fail(invalid(at(), d)))?;
                        if !seen.insert(e.addr) {
                            return Err(fail(invalid(at(), format!("duplicate node {}", e.addr))));
                        }
                        entries.push(e);
                    }
                }
                "nat" => {
                    let x: NatXml = s.deserialize(bytes).map_err(fail)?;
                    nat = Some(x.into_info().map_err(|d| fail(invalid(s.position, d)))?);
                }
                _ => unreachable_section(),
            }
        }
        let host_cache = HostCache::from_entries(limits.cache.clone(), entries, now)?;
        Ok(Self {
            host_cache,
            nat,
            preserved: doc.preserved,
        })
    }
}

impl ConfigFile {
    /// An empty file under `limits`.
    ///
    /// # Errors
    /// If `limits.buddies` is invalid.
    pub fn new(limits: &Limits) -> Result<Self, Error> {
        Ok(Self {
            settings: Settings::default(),
            buddies: BuddyList::new(limits.buddies.clone())?,
            preserved: Preserved::default(),
        })
    }

    /// The document's bytes.
    #[must_use]
    pub fn encode(&self) -> String {
        let s = &self.settings;
        let settings = SettingsXml {
            username: s.username.clone(),
            listen_port: s.listen_port,
            alternative_ports: s.alternative_ports,
            allow_super_node: s.allow_super_node,
            reveal_address: s.reveal_address_to_strangers,
        };
        let contacts = self
            .buddies
            .iter()
            .map(|c| ContactXml {
                username: c.username.clone(),
                auth: c.authorization.as_str().to_owned(),
                display_name: c.display_name.clone(),
                notes: (!c.notes.is_empty()).then(|| c.notes.clone()),
                group: c
                    .groups
                    .iter()
                    .map(|g| GroupXml { name: g.clone() })
                    .collect(),
                presence: c.presence.map(|p| PresenceXml {
                    status: p.status.as_str().to_owned(),
                    at: unix_secs(p.at),
                }),
            })
            .collect();
        let mut out = header(CONFIG_ROOT);
        push_section(&mut out, "settings", &settings);
        push_section(&mut out, "buddies", &BuddiesXml { contact: contacts });
        footer(&mut out, CONFIG_ROOT, &self.preserved);
        out
    }

    /// Parses `config.xml` (plaintext; [`crate::store`] decrypts first). `path` only
    /// names the file in errors.
    ///
    /// # Errors
    /// [`Error::File`] with a [`FileErrorKind`] naming what is wrong and where.
    pub fn decode(bytes: &[u8], path: &Path, limits: &Limits) -> Result<Self, Error> {
        let fail = |kind| {
            Error::File(FileError {
                path: path.to_owned(),
                kind,
                moved_to: None,
            })
        };
        let doc = Document::parse(bytes, CONFIG_ROOT, limits).map_err(fail)?;
        let mut file = Self::new(limits)?;
        file.preserved = doc.preserved;
        for s in &doc.sections {
            match s.name.as_str() {
                "settings" => {
                    let x: SettingsXml = s.deserialize(bytes).map_err(fail)?;
                    file.settings = Settings {
                        username: x.username,
                        listen_port: x.listen_port,
                        alternative_ports: x.alternative_ports,
                        allow_super_node: x.allow_super_node,
                        reveal_address_to_strangers: x.reveal_address,
                    };
                }
                "buddies" => {
                    let x: BuddiesXml = s.deserialize(bytes).map_err(fail)?;
                    let max = limits.buddies.max_contacts;
                    if x.contact.len() > max {
                        return Err(fail(FileErrorKind::TooManyEntries {
                            what: "contacts",
                            max,
                        }));
                    }
                    for (i, c) in x.contact.into_iter().enumerate() {
                        let at = || s.child_position(bytes, "<contact", i);
                        let contact = c.into_contact().map_err(|d| fail(invalid(at(), d)))?;
                        let name = contact.username.clone();
                        file.buddies
                            .insert(contact)
                            .map_err(|e| fail(invalid(at(), format!("contact {name:?}: {e}"))))?;
                    }
                }
                _ => unreachable_section(),
            }
        }
        Ok(file)
    }
}

/// Known sections are the only ones `Document::parse` returns; this keeps the match
/// exhaustive without a panic.
const fn unreachable_section() {}

fn invalid(position: Position, detail: String) -> FileErrorKind {
    FileErrorKind::Invalid { position, detail }
}

fn header(root: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} version=\"{FORMAT_VERSION}\">\n")
}

fn push_section(out: &mut String, name: &str, value: &impl Serialize) {
    // Our own plain structs always serialize; an error would leave the section out,
    // which the round-trip tests would catch.
    if let Ok(s) = quick_xml::se::to_string_with_root(name, value) {
        out.push_str(&s);
        out.push('\n');
    }
}

fn footer(out: &mut String, root: &str, preserved: &Preserved) {
    for raw in preserved.iter() {
        out.push_str(raw);
        out.push('\n');
    }
    out.push_str("</");
    out.push_str(root);
    out.push_str(">\n");
}

/// A known top-level section, located in the source.
struct Section {
    name: String,
    start: usize,
    end: usize,
    position: Position,
}

impl Section {
    fn deserialize<T: for<'de> Deserialize<'de>>(&self, bytes: &[u8]) -> Result<T, FileErrorKind> {
        let raw = bytes
            .get(self.start..self.end)
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or_default();
        quick_xml::de::from_str(raw).map_err(|e| FileErrorKind::Invalid {
            position: self.position,
            detail: format!("<{}>: {e}", self.name),
        })
    }

    /// Position of the `i`th occurrence of `tag` inside the section (for errors).
    fn child_position(&self, bytes: &[u8], tag: &str, i: usize) -> Position {
        let raw = bytes.get(self.start..self.end).unwrap_or_default();
        let t = tag.as_bytes();
        let found = raw
            .windows(t.len())
            .enumerate()
            .filter(|(_, w)| *w == t)
            .nth(i)
            .map_or(0, |(at, _)| at);
        Position::locate(bytes, self.start + found)
    }
}

/// The outline of a document: its known sections and preserved unknown ones.
struct Document {
    sections: Vec<Section>,
    preserved: Preserved,
}

impl Document {
    fn parse(bytes: &[u8], root: &'static str, limits: &Limits) -> Result<Self, FileErrorKind> {
        if bytes.len() > limits.max_file_len {
            return Err(FileErrorKind::TooLarge {
                len: bytes.len() as u64,
                max: limits.max_file_len as u64,
            });
        }
        let text = core::str::from_utf8(bytes).map_err(|e| FileErrorKind::Syntax {
            position: Position::locate(bytes, e.valid_up_to()),
            detail: "invalid UTF-8".into(),
        })?;
        let known: &[&str] = if root == SHARED_ROOT {
            &["hostcache", "nat"]
        } else {
            &["settings", "buddies"]
        };
        let syntax = |at: usize, detail: String| FileErrorKind::Syntax {
            position: Position::locate(bytes, at),
            detail,
        };
        let mut reader = Reader::from_str(text);
        let mut depth = 0usize;
        let mut saw_root = false;
        let mut closed = false;
        let mut sections: Vec<Section> = Vec::new();
        let mut preserved = Vec::new();
        loop {
            let before = pos(&reader);
            let event = reader
                .read_event()
                .map_err(|e| syntax(pos(&reader).max(before), e.to_string()))?;
            match event {
                Event::Eof => break,
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
                Event::DocType(_) => {
                    return Err(syntax(before, "<!DOCTYPE> is not allowed".into()));
                }
                Event::Text(t) if t.bytes().all(|b| b.is_ascii_whitespace()) => {}
                Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {
                    return Err(invalid(
                        Position::locate(bytes, before),
                        "unexpected text".into(),
                    ));
                }
                Event::Start(e) | Event::Empty(e) if depth == 0 => {
                    let empty = last_tag_was_empty(bytes, pos(&reader));
                    if saw_root {
                        return Err(syntax(before, "content after the root element".into()));
                    }
                    saw_root = true;
                    check_root(&e, root, bytes, before)?;
                    if empty {
                        closed = true;
                    } else {
                        depth = 1;
                    }
                }
                Event::Start(e) => {
                    let name = e.name().0.to_owned();
                    let end_name = e.name().0.to_owned();
                    reader
                        .read_to_end(quick_xml::name::QName(&end_name))
                        .map_err(|err| syntax(pos(&reader), err.to_string()))?;
                    Self::section(
                        name,
                        before,
                        pos(&reader),
                        bytes,
                        text,
                        known,
                        limits,
                        &mut sections,
                        &mut preserved,
                    )?;
                }
                Event::Empty(e) => {
                    let name = e.name().0.to_owned();
                    Self::section(
                        name,
                        before,
                        pos(&reader),
                        bytes,
                        text,
                        known,
                        limits,
                        &mut sections,
                        &mut preserved,
                    )?;
                }
                Event::End(_) => {
                    depth = 0;
                    closed = true;
                }
            }
        }
        if !saw_root {
            return Err(syntax(
                bytes.len(),
                format!("no <{root}> element (empty or truncated file)"),
            ));
        }
        if !closed {
            return Err(syntax(
                bytes.len(),
                format!("missing </{root}> (truncated file)"),
            ));
        }
        Ok(Self {
            sections,
            preserved: Preserved(preserved),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn section(
        name: String,
        start: usize,
        end: usize,
        bytes: &[u8],
        text: &str,
        known: &[&str],
        limits: &Limits,
        sections: &mut Vec<Section>,
        preserved: &mut Vec<String>,
    ) -> Result<(), FileErrorKind> {
        let position = Position::locate(bytes, start);
        if known.contains(&name.as_str()) {
            if sections.iter().any(|s| s.name == name) {
                return Err(invalid(position, format!("duplicate <{name}> section")));
            }
            sections.push(Section {
                name,
                start,
                end,
                position,
            });
        } else {
            if preserved.len() >= limits.max_unknown {
                return Err(FileErrorKind::TooManyEntries {
                    what: "unknown elements",
                    max: limits.max_unknown,
                });
            }
            preserved.push(text.get(start..end).unwrap_or_default().to_owned());
        }
        Ok(())
    }
}

fn pos(reader: &Reader<&[u8]>) -> usize {
    usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX)
}

/// Whether the tag that ends just before `end` is self-closing (`/>`).
fn last_tag_was_empty(bytes: &[u8], end: usize) -> bool {
    end >= 2 && bytes.get(end - 2..end) == Some(b"/>")
}

fn check_root(
    e: &BytesStart<'_>,
    root: &'static str,
    bytes: &[u8],
    at: usize,
) -> Result<(), FileErrorKind> {
    let found = e.name().0.to_owned();
    if found != root {
        return Err(FileErrorKind::WrongRoot {
            expected: root,
            found,
        });
    }
    let position = Position::locate(bytes, at);
    let version = e
        .try_get_attribute("version")
        .ok()
        .flatten()
        .map(|a| a.value.into_owned())
        .ok_or_else(|| invalid(position, "missing version attribute".into()))?;
    let major = version
        .split_once('.')
        .filter(|(ma, mi)| is_number(ma) && is_number(mi))
        .and_then(|(ma, _)| ma.parse::<u32>().ok())
        .ok_or_else(|| invalid(position, format!("version {version:?} is not MAJOR.MINOR")))?;
    if major > MAJOR {
        return Err(FileErrorKind::NewerVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if major < MAJOR {
        return Err(invalid(
            position,
            format!("unknown old version {version:?}"),
        ));
    }
    Ok(())
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit())
}

fn time(secs: u64) -> Result<SystemTime, String> {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .filter(|_| secs < (1 << 40))
        .ok_or_else(|| format!("time {secs} out of range"))
}

fn addr(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s.parse().map_err(|_| format!("invalid address {s:?}"))?;
    validate_addr(a).map_err(|_| format!("address {s} cannot be a super node"))?;
    Ok(a)
}

#[derive(Serialize, Deserialize)]
struct HostCacheXml {
    #[serde(default)]
    node: Vec<NodeXml>,
}

#[derive(Serialize, Deserialize)]
struct NodeXml {
    #[serde(rename = "@addr")]
    addr: String,
    #[serde(rename = "@source")]
    source: String,
    #[serde(rename = "@first-seen")]
    first_seen: u64,
    #[serde(rename = "@last-seen")]
    last_seen: u64,
    #[serde(
        rename = "@last-success",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    last_success: Option<u64>,
    #[serde(
        rename = "@last-attempt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    last_attempt: Option<u64>,
    #[serde(rename = "@successes", default)]
    successes: u32,
    #[serde(rename = "@failures", default)]
    failures: u32,
    #[serde(rename = "@consecutive-failures", default)]
    consecutive_failures: u32,
    #[serde(rename = "@rtt-ms", default, skip_serializing_if = "Option::is_none")]
    rtt_ms: Option<u32>,
}

impl NodeXml {
    fn into_entry(self) -> Result<Entry, String> {
        Ok(Entry {
            addr: addr(&self.addr)?,
            first_seen: time(self.first_seen)?,
            last_seen: time(self.last_seen)?,
            last_success: self.last_success.map(time).transpose()?,
            last_attempt: self.last_attempt.map(time).transpose()?,
            successes: self.successes,
            failures: self.failures,
            consecutive_failures: self.consecutive_failures,
            last_rtt: self.rtt_ms.map(|ms| Duration::from_millis(u64::from(ms))),
            source: Source::from_name(&self.source)
                .ok_or_else(|| format!("unknown source {:?}", self.source))?,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct NatXml {
    #[serde(rename = "@discovered")]
    discovered: u64,
    #[serde(rename = "@classic")]
    classic: String,
    #[serde(rename = "@mapping", default, skip_serializing_if = "Option::is_none")]
    mapping: Option<String>,
    #[serde(
        rename = "@filtering",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    filtering: Option<String>,
    #[serde(rename = "@mapped", default, skip_serializing_if = "Option::is_none")]
    mapped: Option<String>,
}

impl NatXml {
    fn into_info(self) -> Result<NatInfo, String> {
        let behaviour = |s: Option<String>| {
            s.map(|s| Behaviour::from_name(&s).ok_or_else(|| format!("unknown behaviour {s:?}")))
                .transpose()
        };
        Ok(NatInfo {
            discovered_at: time(self.discovered)?,
            mapping: behaviour(self.mapping)?,
            filtering: behaviour(self.filtering)?,
            classic: ClassicNat::from_name(&self.classic)
                .ok_or_else(|| format!("unknown NAT type {:?}", self.classic))?,
            mapped_address: self
                .mapped
                .map(|s| s.parse().map_err(|_| format!("invalid address {s:?}")))
                .transpose()?,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct SettingsXml {
    #[serde(rename = "@username", default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(
        rename = "@listen-port",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    listen_port: Option<u16>,
    #[serde(rename = "@alternative-ports", default)]
    alternative_ports: bool,
    #[serde(rename = "@super-node", default)]
    allow_super_node: bool,
    #[serde(rename = "@reveal-address", default)]
    reveal_address: bool,
}

#[derive(Serialize, Deserialize)]
struct BuddiesXml {
    #[serde(default)]
    contact: Vec<ContactXml>,
}

#[derive(Serialize, Deserialize)]
struct ContactXml {
    #[serde(rename = "@username")]
    username: String,
    #[serde(rename = "@auth")]
    auth: String,
    #[serde(
        rename = "@display-name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    display_name: Option<String>,
    #[serde(rename = "@notes", default, skip_serializing_if = "Option::is_none")]
    notes: Option<String>,
    #[serde(default)]
    group: Vec<GroupXml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    presence: Option<PresenceXml>,
}

#[derive(Serialize, Deserialize)]
struct GroupXml {
    #[serde(rename = "@name")]
    name: String,
}

#[derive(Serialize, Deserialize)]
struct PresenceXml {
    #[serde(rename = "@status")]
    status: String,
    #[serde(rename = "@at")]
    at: u64,
}

impl ContactXml {
    fn into_contact(self) -> Result<Contact, String> {
        let authorization = Authorization::from_name(&self.auth)
            .ok_or_else(|| format!("unknown authorization {:?}", self.auth))?;
        let mut groups = BTreeSet::new();
        for g in self.group {
            if !groups.insert(g.name.clone()) {
                return Err(format!("duplicate group {:?}", g.name));
            }
        }
        let presence = match self.presence {
            Some(p) => Some(Presence {
                status: Status::from_name(&p.status)
                    .ok_or_else(|| format!("unknown status {:?}", p.status))?,
                at: time(p.at)?,
            }),
            None => None,
        };
        Ok(Contact {
            username: self.username,
            display_name: self.display_name,
            groups,
            authorization,
            notes: self.notes.unwrap_or_default(),
            presence,
        })
    }
}
