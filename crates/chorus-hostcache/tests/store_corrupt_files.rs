//! Damaged files are never silently discarded: each is refused with an error naming
//! the file and the position, moved aside, and the caller can start fresh.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_framing::SeededEntropy;
use chorus_hostcache::hostcache::Source;
use chorus_hostcache::store::{CONFIG_XML, LOCK_FILE, SHARED_XML, Store, StoreConfig};
use chorus_hostcache::{Error, FileError, FileErrorKind};

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("chorus-hc-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn fast_config() -> StoreConfig {
    let mut c = StoreConfig::default();
    c.at_rest.iterations = 10;
    c.lock_wait = Duration::from_millis(50);
    c
}

/// Writes `bytes` as `name`, loads it, and returns the error (asserting it was moved).
fn refused(test: &str, name: &str, bytes: &[u8]) -> FileError {
    let d = dir(test);
    fs::write(d.join(name), bytes).unwrap();
    let store = Store::new(&d, fast_config()).unwrap();
    let err = if name == SHARED_XML {
        store.load_shared(now()).map(|_| ()).unwrap_err()
    } else {
        store.load_config(None, now()).map(|_| ()).unwrap_err()
    };
    let Error::File(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.path, d.join(name));
    let moved = e.moved_to.clone().expect("moved aside");
    assert_eq!(moved, d.join(format!("{name}.corrupt-1700000000")));
    assert_eq!(
        fs::read(&moved).unwrap(),
        bytes,
        "the bad file is kept byte for byte"
    );
    assert!(!d.join(name).exists());
    // The caller starts fresh.
    assert!(store.load_shared(now()).unwrap().is_none() || name == CONFIG_XML);
    assert!(e.to_string().contains(name), "{e}");
    e
}

const GOOD_SHARED: &str = include_str!("../../../docs/files/shared.xml");
const GOOD_CONFIG: &str = include_str!("../../../docs/files/config.xml");

#[test]
fn a_truncated_file_is_refused_with_its_position() {
    let cut = &GOOD_SHARED.as_bytes()[..GOOD_SHARED.len() / 2];
    let e = refused("trunc", SHARED_XML, cut);
    assert!(matches!(e.kind, FileErrorKind::Syntax { .. }), "{e}");
    assert!(e.to_string().contains("line "), "{e}");
    // Every prefix that cuts into the root element is refused, never accepted half-read.
    let store = Store::new(dir("prefixes"), fast_config()).unwrap();
    for n in 0..GOOD_CONFIG.trim_end().len() {
        fs::write(store.dir().join(CONFIG_XML), &GOOD_CONFIG.as_bytes()[..n]).unwrap();
        assert!(
            store.load_config(None, now()).is_err(),
            "prefix {n} accepted"
        );
    }
}

#[test]
fn a_wrong_root_element_is_refused() {
    let e = refused("root", CONFIG_XML, GOOD_SHARED.as_bytes());
    assert_eq!(
        e.kind,
        FileErrorKind::WrongRoot {
            expected: "config",
            found: "shared".into()
        }
    );
}

#[test]
fn bad_utf8_is_refused_at_its_offset() {
    let mut b = GOOD_SHARED.as_bytes().to_vec();
    b[60] = 0xff;
    let e = refused("utf8", SHARED_XML, &b);
    let FileErrorKind::Syntax { position, .. } = e.kind else {
        panic!("{e}")
    };
    assert_eq!(position.offset, 60);
    assert_eq!(position.line, 2);
}

#[test]
fn duplicated_entries_are_refused() {
    let dup = GOOD_SHARED.replace("198.51.100.23:40000", "192.0.2.10:33033");
    let e = refused("dupnode", SHARED_XML, dup.as_bytes());
    assert!(
        e.to_string().contains("duplicate node 192.0.2.10:33033"),
        "{e}"
    );
    let dup = GOOD_CONFIG.replace("username=\"carol\"", "username=\"bob\"");
    let e = refused("dupcontact", CONFIG_XML, dup.as_bytes());
    assert!(
        matches!(e.kind, FileErrorKind::Invalid { position, .. } if position.line == 10),
        "{e}"
    );
    let dup = GOOD_CONFIG.replace("</buddies>", "</buddies><buddies/>");
    refused("dupsection", CONFIG_XML, dup.as_bytes());
}

#[test]
fn invalid_addresses_are_refused() {
    for (i, bad) in [
        "999.1.1.1:5",
        "192.0.2.1",
        "0.0.0.0:33033",
        "[ff02::1]:5",
        "192.0.2.1:0",
    ]
    .iter()
    .enumerate()
    {
        let doc = GOOD_SHARED.replace("198.51.100.23:40000", bad);
        let e = refused(&format!("addr{i}"), SHARED_XML, doc.as_bytes());
        let FileErrorKind::Invalid { position, .. } = &e.kind else {
            panic!("{e}")
        };
        assert_eq!(position.line, 6, "{e}");
    }
}

#[test]
fn a_100_mb_file_is_refused_before_reading() {
    let d = dir("huge");
    let f = fs::File::create(d.join(SHARED_XML)).unwrap();
    f.set_len(100 << 20).unwrap(); // sparse: costs no disk and, if we are right, no memory
    drop(f);
    let err = Store::new(&d, fast_config())
        .unwrap()
        .load_shared(now())
        .unwrap_err();
    let Error::File(e) = err else { panic!() };
    assert_eq!(
        e.kind,
        FileErrorKind::TooLarge {
            len: 100 << 20,
            max: 8 << 20
        }
    );
    assert!(e.moved_to.is_some());
}

#[test]
fn a_newer_major_version_is_refused_and_kept() {
    let doc = GOOD_SHARED.replace("version=\"1.0\"", "version=\"2.0\"");
    let e = refused("newer", SHARED_XML, doc.as_bytes());
    assert_eq!(
        e.kind,
        FileErrorKind::NewerVersion {
            found: "2.0".into(),
            supported: "1.0"
        }
    );
}

#[test]
fn doctype_and_stray_text_are_refused() {
    let doc = GOOD_SHARED.replace("<shared", "<!DOCTYPE x [<!ENTITY a \"b\">]><shared");
    refused("doctype", SHARED_XML, doc.as_bytes());
    let doc = GOOD_SHARED.replace("<hostcache>", "stray<hostcache>");
    refused("stray", SHARED_XML, doc.as_bytes());
    refused("empty", SHARED_XML, b"");
    refused("noversion", SHARED_XML, b"<shared/>");
    refused("badversion", SHARED_XML, b"<shared version=\"one\"/>");
    refused(
        "twice",
        SHARED_XML,
        b"<shared version=\"1.0\"/><shared version=\"1.0\"/>",
    );
}

#[test]
fn a_second_corrupt_file_does_not_overwrite_the_first() {
    let d = dir("twice-corrupt");
    let store = Store::new(&d, fast_config()).unwrap();
    for _ in 0..2 {
        fs::write(d.join(SHARED_XML), b"<oops").unwrap();
        assert!(store.load_shared(now()).is_err());
    }
    assert!(d.join("shared.xml.corrupt-1700000000").exists());
    assert!(d.join("shared.xml.corrupt-1700000000-1").exists());
}

#[test]
fn unknown_sections_from_a_newer_minor_version_survive_a_rewrite() {
    let d = dir("minor");
    fs::write(d.join(CONFIG_XML), GOOD_CONFIG).unwrap();
    let store = Store::new(&d, fast_config()).unwrap();
    let mut config = store.load_config(None, now()).unwrap().unwrap();
    config.buddies.request("dave").unwrap();
    store
        .save_config(&config, None, &mut SeededEntropy::new(1))
        .unwrap();
    let text = fs::read_to_string(d.join(CONFIG_XML)).unwrap();
    assert!(
        text.contains(
            "<call-history><call with=\"bob\" at=\"1699999000\" seconds=\"320\"/></call-history>"
        ),
        "{text}"
    );
    assert_eq!(store.load_config(None, now()).unwrap().unwrap(), config);
}

#[test]
fn encrypted_config_needs_the_right_password_and_is_never_moved_for_a_wrong_one() {
    let d = dir("encrypted");
    let store = Store::new(&d, fast_config()).unwrap();
    let mut config = store.empty_config().unwrap();
    config.buddies.request("bob").unwrap();
    store
        .save_config(&config, Some(b"s3cret"), &mut SeededEntropy::new(2))
        .unwrap();
    assert!(store.config_is_encrypted().unwrap());
    let raw = fs::read(d.join(CONFIG_XML)).unwrap();
    assert!(
        !raw.windows(3).any(|w| w == b"bob"),
        "the buddy list is not readable on disk"
    );
    assert_eq!(
        store.load_config(Some(b"s3cret"), now()).unwrap().unwrap(),
        config
    );
    for (pw, kind) in [
        (None, FileErrorKind::PasswordRequired),
        (Some(&b"guess"[..]), FileErrorKind::WrongPassword),
    ] {
        let Err(Error::File(e)) = store.load_config(pw, now()) else {
            panic!()
        };
        assert_eq!((e.kind, e.moved_to), (kind, None));
        assert!(d.join(CONFIG_XML).exists());
    }
    // Tampering with the right password is damage: moved aside.
    let mut bad = raw.clone();
    *bad.last_mut().unwrap() ^= 1;
    fs::write(d.join(CONFIG_XML), &bad).unwrap();
    let Err(Error::File(e)) = store.load_config(Some(b"s3cret"), now()) else {
        panic!()
    };
    assert_eq!(e.kind, FileErrorKind::Tampered);
    assert!(e.moved_to.is_some());
}

#[test]
fn update_config_keeps_the_file_encrypted_and_refuses_a_wrong_password_unchanged() {
    let d = dir("update-config");
    let store = Store::new(&d, fast_config()).unwrap();
    let mut entropy = SeededEntropy::new(3);
    // No file yet: the update starts from an empty one.
    let n = store
        .update_config(Some(b"s3cret"), now(), &mut entropy, |c| {
            c.buddies.request("bob").unwrap();
            c.buddies.len()
        })
        .unwrap();
    assert_eq!(n, 1);
    store
        .update_config(Some(b"s3cret"), now(), &mut entropy, |c| {
            c.buddies.request("carol").unwrap();
        })
        .unwrap();
    assert!(store.config_is_encrypted().unwrap());
    let loaded = store.load_config(Some(b"s3cret"), now()).unwrap().unwrap();
    assert_eq!(loaded.buddies.len(), 2);
    let before = fs::read(d.join(CONFIG_XML)).unwrap();
    let Err(Error::File(e)) = store.update_config(Some(b"guess"), now(), &mut entropy, |_| {
        panic!("a file that did not open is never handed to the change")
    }) else {
        panic!("a wrong password was accepted")
    };
    assert_eq!(e.kind, FileErrorKind::WrongPassword);
    assert_eq!(fs::read(d.join(CONFIG_XML)).unwrap(), before);
}

#[test]
fn a_lock_holder_makes_saves_wait_then_fail_clearly() {
    let d = dir("locked");
    let store = Store::new(&d, fast_config()).unwrap();
    // Another holder of the OS lock (a separate open file, as another process has),
    // which names itself the way the store does.
    let holder = fs::File::create(d.join(LOCK_FILE)).unwrap();
    holder.try_lock().unwrap();
    fs::write(d.join(LOCK_FILE), "4242").unwrap();
    let err = store
        .save_shared(&store.empty_shared().unwrap())
        .unwrap_err();
    let Error::File(e) = err else { panic!() };
    assert_eq!(e.kind, FileErrorKind::Locked { pid: Some(4242) });
    assert!(store.load_shared(now()).is_err(), "loads take the lock too");
    // Closing the holder's file releases the lock; the content left behind (a PID
    // that may be anybody's now) does not matter.
    drop(holder);
    store.save_shared(&store.empty_shared().unwrap()).unwrap();
    assert_eq!(
        fs::read_to_string(d.join(LOCK_FILE)).unwrap(),
        std::process::id().to_string()
    );
}

#[test]
fn a_lock_file_left_behind_is_no_lock() {
    let d = dir("left-behind");
    // What a holder that died leaves: the file and its PID, no OS lock. A PID that is
    // alive (ours) must not make the store wait.
    fs::write(d.join(LOCK_FILE), std::process::id().to_string()).unwrap();
    let store = Store::new(&d, fast_config()).unwrap();
    store.save_shared(&store.empty_shared().unwrap()).unwrap();
}

#[test]
fn a_crash_between_write_and_rename_leaves_the_old_file_intact() {
    let d = dir("half-written");
    let store = Store::new(&d, fast_config()).unwrap();
    let mut shared = store.empty_shared().unwrap();
    shared
        .host_cache
        .insert("192.0.2.1:1".parse().unwrap(), Source::Manual, now())
        .unwrap();
    store.save_shared(&shared).unwrap();
    // What a writer killed before its rename leaves behind.
    fs::write(
        d.join("shared.xml.tmp-12345"),
        &GOOD_SHARED.as_bytes()[..100],
    )
    .unwrap();
    assert_eq!(store.load_shared(now()).unwrap().unwrap(), shared);
    store.save_shared(&shared).unwrap();
    assert!(
        !d.join("shared.xml.tmp-12345").exists(),
        "the next save cleans up"
    );
}

#[test]
fn missing_files_load_as_none() {
    let store = Store::new(dir("missing"), fast_config()).unwrap();
    assert!(store.load_shared(now()).unwrap().is_none());
    assert!(store.load_config(None, now()).unwrap().is_none());
    assert!(!store.config_is_encrypted().unwrap());
}
