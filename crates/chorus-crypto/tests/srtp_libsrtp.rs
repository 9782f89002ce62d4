//! Interoperability with libsrtp, an independent SRTP implementation.
//!
//! `tests/libsrtp/harness.c` is compiled at test time against the system libsrtp2
//! (`pkg-config --cflags --libs libsrtp2`; Debian: `libsrtp2-dev`, `pkg-config`,
//! `gcc`) and driven over a pipe. For every suite both implementations support,
//! Chorus and libsrtp protect the same packets, which must come out byte-identical,
//! then each unprotects the other's packets delivered out of order: several SSRCs,
//! CSRC lists, header extensions, padding, a sequence-number wrap (ROC 0 -> 1),
//! replays and tampering. SRTCP likewise, in both directions.
//!
//! Without libsrtp2 the tests print why and pass, unless `CHORUS_REQUIRE_INTEROP=1`
//! (set by `cargo xtask test`), which makes them fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_crypto::{AuthError, Error};
use chorus_framing::SeededEntropy;

/// The harness is killed if a test talks to it for longer than this.
const HARNESS_DEADLINE: Duration = Duration::from_secs(120);
/// libsrtp's `srtp_err_status_auth_fail`, `replay_fail` and `replay_old`.
const LIBSRTP_AUTH_FAIL: &str = "err 7";
const LIBSRTP_REPLAY: [&str; 2] = ["err 9", "err 10"];

/// Builds the harness once per test binary; `Err` says why it cannot be built.
fn harness_binary() -> Result<&'static Path, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let flags = Command::new("pkg-config")
                .args(["--cflags", "--libs", "libsrtp2"])
                .output()
                .map_err(|e| format!("pkg-config is not runnable ({e})"))?;
            if !flags.status.success() {
                return Err(format!(
                    "pkg-config does not know libsrtp2: {}",
                    String::from_utf8_lossy(&flags.stderr).trim()
                ));
            }
            let flags = String::from_utf8_lossy(&flags.stdout).into_owned();
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libsrtp/harness.c");
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("libsrtp-harness");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let exe = dir.join("harness");
            let out = Command::new("cc")
                .arg("-O2")
                .arg("-o")
                .arg(&exe)
                .arg(&src)
                .args(flags.split_whitespace())
                .output()
                .map_err(|e| format!("cc is not runnable ({e})"))?;
            if !out.status.success() {
                return Err(format!(
                    "compiling the harness failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(exe)
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// A running harness: one child process, stopped by PID when dropped or when the
/// deadline passes.
struct Harness {
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    cancel: Option<mpsc::Sender<()>>,
    watchdog: Option<JoinHandle<()>>,
}

impl Harness {
    /// Starts the harness, or returns `None` (after printing why) when libsrtp2 is
    /// missing and interop is not required.
    fn start() -> Option<Self> {
        let exe = match harness_binary() {
            Ok(exe) => exe,
            Err(why) => {
                chorus_testkit::skip(&format!(
                    "the libsrtp harness cannot be built: {why}. Install the Debian \
                     packages libsrtp2-dev, pkg-config and gcc"
                ));
                return None;
            }
        };
        let mut child = Command::new(exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the libsrtp harness");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let child = Arc::new(Mutex::new(child));
        let (cancel, cancelled) = mpsc::channel::<()>();
        let watched = Arc::clone(&child);
        let watchdog = std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = cancelled.recv_timeout(HARNESS_DEADLINE) {
                let mut child = watched.lock().unwrap_or_else(|p| p.into_inner());
                eprintln!("libsrtp harness (pid {}) overran its deadline", child.id());
                let _ = child.kill();
            }
        });
        Some(Self {
            child,
            stdin: Some(stdin),
            stdout,
            cancel: Some(cancel),
            watchdog: Some(watchdog),
        })
    }

    /// Sends one command line and returns the answer line.
    fn call(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").expect("write to the harness");
        stdin.flush().unwrap();
        let mut answer = String::new();
        let n = self
            .stdout
            .read_line(&mut answer)
            .expect("read from the harness");
        assert!(
            n > 0,
            "the harness exited (or was killed) during: {line:.80}"
        );
        answer.trim_end().to_owned()
    }

    fn new_session(&mut self, name: &str, suite: Suite, dir: &str, key: &[u8], salt: &[u8]) {
        self.new_session_with(name, suite, dir, key, salt, "");
    }

    /// `option` is "" or "auth-only" (libsrtp's `sec_serv_auth`: no encryption).
    fn new_session_with(
        &mut self,
        name: &str,
        suite: Suite,
        dir: &str,
        key: &[u8],
        salt: &[u8],
        option: &str,
    ) {
        let answer = self.call(&format!(
            "new {name} {} {dir} {}{} {option}",
            suite.name(),
            hex(key),
            hex(salt)
        ));
        assert_eq!(answer, "ok", "libsrtp session {name} for {suite}");
    }

    /// `rtp`/`rtcp` `protect`/`unprotect`; `Ok(bytes)` or `Err("err <status>")`.
    fn packet(
        &mut self,
        kind: &str,
        name: &str,
        op: &str,
        bytes: &[u8],
    ) -> Result<Vec<u8>, String> {
        let answer = self.call(&format!("{kind} {name} {op} {}", hex(bytes)));
        match answer.strip_prefix("ok ") {
            Some(h) => Ok(unhex(h)),
            None if answer == "ok" => Ok(Vec::new()),
            None => Err(answer),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit");
        }
        if let Some(cancel) = self.cancel.take() {
            let _ = cancel.send(());
        }
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if std::thread::panicking() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn random_bytes(rng: &mut SeededEntropy, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// The suites libsrtp accepts at run time (GCM needs its NSS or OpenSSL backend).
fn shared_suites(h: &mut Harness) -> Vec<Suite> {
    let caps = h.call("caps");
    let names: Vec<&str> = caps
        .strip_prefix("ok")
        .unwrap()
        .split_whitespace()
        .collect();
    let suites: Vec<Suite> = Suite::ALL
        .into_iter()
        .filter(|s| names.contains(&s.name()))
        .collect();
    eprintln!("suites libsrtp supports here: {names:?}");
    assert!(
        suites.contains(&Suite::AesCm128HmacSha1_80),
        "libsrtp must at least support its mandatory suite"
    );
    suites
}

fn chorus(suite: Suite, key: &[u8], salt: &[u8]) -> SrtpSession {
    SrtpSession::new(Policy::new(suite, key, salt).unwrap()).unwrap()
}

/// An RTP packet (RFC 3550 §5.1) whose shape varies with `n`: 0–15 CSRCs, with or
/// without a header extension of 0–3 words, with or without padding, 0–299 bytes of
/// payload.
fn rtp_packet(rng: &mut SeededEntropy, seq: u16, ssrc: u32, n: usize) -> Vec<u8> {
    let csrcs = n % 16;
    let extension = n % 3 == 1;
    let padding = n % 7 == 3;
    let mut p = vec![
        0x80 | (u8::from(padding) << 5) | (u8::from(extension) << 4) | csrcs as u8,
        (u8::from(n.is_multiple_of(2)) << 7) | 96,
    ];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(n as u32 * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for _ in 0..csrcs {
        p.extend_from_slice(&random_bytes(rng, 4));
    }
    if extension {
        let words = (n / 3 % 4) as u16;
        p.extend_from_slice(&[0xbe, 0xde]);
        p.extend_from_slice(&words.to_be_bytes());
        p.extend(random_bytes(rng, 4 * usize::from(words)));
    }
    p.extend(random_bytes(rng, (n * 37) % 300));
    if padding {
        p.extend_from_slice(&[0, 0, 3]);
    }
    p
}

/// A compound-looking RTCP packet: a sender or receiver report header with a correct
/// length field and 0–63 words of body.
fn rtcp_packet(rng: &mut SeededEntropy, ssrc: u32, n: usize) -> Vec<u8> {
    let words = (n * 7) % 64;
    let mut p = vec![
        0x80 | (n % 4) as u8,
        if n.is_multiple_of(2) { 200 } else { 201 },
    ];
    p.extend_from_slice(&(words as u16 + 1).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(random_bytes(rng, 4 * words));
    p
}

/// Delivery order: in order, but every fifth pair swapped and every 17th packet
/// held back 40 places (still inside the 128-packet window).
fn delivery_order(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (0..n.saturating_sub(1)).step_by(5) {
        order.swap(i, i + 1);
    }
    for i in (0..n.saturating_sub(41)).step_by(17) {
        let late = order.remove(i);
        order.insert(i + 40, late);
    }
    order
}

#[test]
fn chorus_and_libsrtp_protect_rtp_identically_and_unprotect_each_other() {
    let Some(mut h) = Harness::start() else {
        return;
    };
    let mut rng = SeededEntropy::new(3711);
    for (case, suite) in shared_suites(&mut h).into_iter().enumerate() {
        let key = random_bytes(&mut rng, suite.key_len());
        let salt = random_bytes(&mut rng, suite.salt_len());
        let (ltx, lrx) = (format!("rtp-tx-{case}"), format!("rtp-rx-{case}"));
        h.new_session(&ltx, suite, "out", &key, &salt);
        h.new_session(&lrx, suite, "in", &key, &salt);
        let mut ctx = chorus(suite, &key, &salt);
        let mut crx = chorus(suite, &key, &salt);

        // Two SSRCs, each wrapping its sequence number (ROC 0 -> 1) mid-stream.
        let streams = [(0x1234_5678u32, 0xffffu16 - 150), (0xcafe_f00d, 0xfff0)];
        let per_stream = 300;
        let mut plain = Vec::new();
        let mut from_chorus = Vec::new();
        let mut from_libsrtp = Vec::new();
        for n in 0..per_stream {
            for (ssrc, start) in streams {
                let seq = start.wrapping_add(n as u16);
                let p = rtp_packet(&mut rng, seq, ssrc, n);
                let mut c = p.clone();
                ctx.protect_rtp(&mut c).unwrap();
                let l = h.packet("rtp", &ltx, "protect", &p).unwrap();
                assert_eq!(c, l, "{suite}: SRTP for seq {seq} differs from libsrtp's");
                plain.push(p);
                from_chorus.push(c);
                from_libsrtp.push(l);
            }
        }
        for ssrc in streams.map(|s| s.0) {
            assert_eq!(
                ctx.sent_index(ssrc).map(|i| i >> 16),
                Some(1),
                "ROC after the wrap"
            );
        }

        for i in delivery_order(plain.len()) {
            let got = h.packet("rtp", &lrx, "unprotect", &from_chorus[i]);
            assert_eq!(
                got.as_ref(),
                Ok(&plain[i]),
                "{suite}: libsrtp unprotecting #{i}"
            );
            let mut c = from_libsrtp[i].clone();
            crx.unprotect_rtp(&mut c)
                .unwrap_or_else(|e| panic!("{suite}: Chorus unprotecting #{i}: {e}"));
            assert_eq!(c, plain[i], "{suite}: Chorus unprotecting #{i}");
        }
        for (ssrc, start) in streams {
            let last = 0x1_0000 + u64::from(start.wrapping_add(per_stream as u16 - 1));
            assert_eq!(
                crx.received_index(ssrc),
                Some(last),
                "{suite}: ROC 1 reached"
            );
        }

        // Replays are refused by both.
        for i in [0, plain.len() / 2, plain.len() - 1] {
            let got = h.packet("rtp", &lrx, "unprotect", &from_chorus[i]);
            assert!(
                LIBSRTP_REPLAY.contains(&got.unwrap_err().as_str()),
                "{suite}"
            );
            let mut c = from_libsrtp[i].clone();
            let err = crx.unprotect_rtp(&mut c).unwrap_err();
            assert_eq!(err, Error::Auth(AuthError::Replay), "{suite}");
        }

        // A tampered next packet is refused by both, and the genuine one still passes.
        let (ssrc, start) = streams[0];
        let p = rtp_packet(&mut rng, start.wrapping_add(per_stream as u16), ssrc, 5);
        let mut c = p.clone();
        ctx.protect_rtp(&mut c).unwrap();
        let l = h.packet("rtp", &ltx, "protect", &p).unwrap();
        assert_eq!(c, l);
        for bit in [7, 8 * 12 + 3, 8 * (c.len() - 1)] {
            let mut bad = c.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let got = h.packet("rtp", &lrx, "unprotect", &bad);
            assert!(
                got.is_err(),
                "{suite}: libsrtp accepted a flipped bit {bit}"
            );
            let mut bad_l = l.clone();
            bad_l[bit / 8] ^= 1 << (bit % 8);
            assert!(crx.unprotect_rtp(&mut bad_l).is_err(), "{suite}: bit {bit}");
        }
        assert_eq!(h.packet("rtp", &lrx, "unprotect", &c).as_ref(), Ok(&p));
        let mut l = l;
        crx.unprotect_rtp(&mut l).unwrap();
        assert_eq!(l, p);
    }
}

#[test]
fn chorus_and_libsrtp_protect_and_unprotect_each_others_srtcp() {
    let Some(mut h) = Harness::start() else {
        return;
    };
    let mut rng = SeededEntropy::new(7714);
    for (case, suite) in shared_suites(&mut h).into_iter().enumerate() {
        let key = random_bytes(&mut rng, suite.key_len());
        let salt = random_bytes(&mut rng, suite.salt_len());
        let (ltx, lrx) = (format!("rtcp-tx-{case}"), format!("rtcp-rx-{case}"));
        h.new_session(&ltx, suite, "out", &key, &salt);
        h.new_session(&lrx, suite, "in", &key, &salt);
        let mut ctx = chorus(suite, &key, &salt);
        let mut crx = chorus(suite, &key, &salt);
        // Protects at whatever SRTCP index libsrtp chose, to compare bytes.
        let mut mirror = chorus(suite, &key, &salt);

        let ssrcs = [0x0bad_cafe_u32, 0x4d61_7273];
        let mut plain = Vec::new();
        let mut from_chorus = Vec::new();
        let mut from_libsrtp = Vec::new();
        for n in 0..200 {
            let ssrc = ssrcs[n % 2];
            let p = rtcp_packet(&mut rng, ssrc, n);
            let mut c = p.clone();
            ctx.protect_rtcp(&mut c).unwrap();
            let l = h.packet("rtcp", &ltx, "protect", &p).unwrap();
            // Where the E flag and SRTCP index sit: before the tag (RFC 3711 §3.4) or
            // at the very end (RFC 7714 §9).
            let word_at = if suite.is_aead() {
                l.len() - 4
            } else {
                l.len() - suite.rtcp_overhead()
            };
            let word = u32::from_be_bytes(l[word_at..word_at + 4].try_into().unwrap());
            assert_ne!(word & 0x8000_0000, 0, "libsrtp encrypts SRTCP by default");
            mirror.set_srtcp_index(ssrc, word & 0x7fff_ffff).unwrap();
            let mut m = p.clone();
            mirror.protect_rtcp(&mut m).unwrap();
            assert_eq!(
                m,
                l,
                "{suite}: SRTCP at index {} differs",
                word & 0x7fff_ffff
            );
            plain.push(p);
            from_chorus.push(c);
            from_libsrtp.push(l);
        }

        for i in delivery_order(plain.len()) {
            let got = h.packet("rtcp", &lrx, "unprotect", &from_chorus[i]);
            assert_eq!(
                got.as_ref(),
                Ok(&plain[i]),
                "{suite}: libsrtp unprotecting #{i}"
            );
            let mut c = from_libsrtp[i].clone();
            crx.unprotect_rtcp(&mut c)
                .unwrap_or_else(|e| panic!("{suite}: Chorus unprotecting #{i}: {e}"));
            assert_eq!(c, plain[i], "{suite}: Chorus unprotecting #{i}");
        }
        for i in [0, 99, 199] {
            let got = h.packet("rtcp", &lrx, "unprotect", &from_chorus[i]);
            assert!(
                LIBSRTP_REPLAY.contains(&got.unwrap_err().as_str()),
                "{suite}"
            );
            let mut c = from_libsrtp[i].clone();
            assert_eq!(
                crx.unprotect_rtcp(&mut c),
                Err(Error::Auth(AuthError::Replay))
            );
        }
        let p = rtcp_packet(&mut rng, ssrcs[0], 3);
        let mut c = p.clone();
        ctx.protect_rtcp(&mut c).unwrap();
        let mut bad = c.clone();
        bad[9] ^= 0x40;
        assert_eq!(
            h.packet("rtcp", &lrx, "unprotect", &bad).unwrap_err(),
            LIBSRTP_AUTH_FAIL,
            "{suite}"
        );
        assert_eq!(h.packet("rtcp", &lrx, "unprotect", &c).as_ref(), Ok(&p));
    }
}

/// One RTP packet, authenticated but not encrypted, through both implementations.
/// Only for counter-mode suites: libsrtp 2.5 encrypts GCM SRTP payloads even under
/// `sec_serv_auth`, so it has no equivalent of RFC 7714 §16.1.3's tagging-only SRTP.
fn authenticated_rtp_round_trip(
    h: &mut Harness,
    rng: &mut SeededEntropy,
    suite: Suite,
    [ltx, lrx]: [&str; 2],
    [ctx, crx]: [&mut SrtpSession; 2],
    n: usize,
) {
    let p = rtp_packet(rng, 100 + n as u16, 0x5eed, n);
    let mut c = p.clone();
    ctx.protect_rtp(&mut c).unwrap();
    assert_eq!(c[..p.len()], p[..], "{suite}: authentication only");
    let l = h.packet("rtp", ltx, "protect", &p).unwrap();
    assert_eq!(
        c, l,
        "{suite}: authenticated-only SRTP differs from libsrtp's"
    );
    assert_eq!(h.packet("rtp", lrx, "unprotect", &c).as_ref(), Ok(&p));
    let mut l = l;
    crx.unprotect_rtp(&mut l).unwrap();
    assert_eq!(l, p);
}

#[test]
fn chorus_and_libsrtp_interoperate_when_only_authenticating() {
    let Some(mut h) = Harness::start() else {
        return;
    };
    let mut rng = SeededEntropy::new(4568);
    for (case, suite) in shared_suites(&mut h).into_iter().enumerate() {
        let key = random_bytes(&mut rng, suite.key_len());
        let salt = random_bytes(&mut rng, suite.salt_len());
        let (ltx, lrx) = (format!("auth-tx-{case}"), format!("auth-rx-{case}"));
        h.new_session_with(&ltx, suite, "out", &key, &salt, "auth-only");
        h.new_session_with(&lrx, suite, "in", &key, &salt, "auth-only");
        let session = || {
            let mut policy = Policy::new(suite, &key, &salt).unwrap();
            policy.encrypt_rtp = false;
            policy.encrypt_rtcp = false;
            SrtpSession::new(policy).unwrap()
        };
        let (mut ctx, mut crx, mut mirror) = (session(), session(), session());
        for n in 0..40 {
            if !suite.is_aead() {
                authenticated_rtp_round_trip(
                    &mut h,
                    &mut rng,
                    suite,
                    [&ltx, &lrx],
                    [&mut ctx, &mut crx],
                    n,
                );
            }

            let p = rtcp_packet(&mut rng, 0x5eed, n);
            let mut c = p.clone();
            ctx.protect_rtcp(&mut c).unwrap();
            assert_eq!(c[..p.len()], p[..], "E = 0 leaves the packet in the clear");
            let l = h.packet("rtcp", &ltx, "protect", &p).unwrap();
            let word_at = if suite.is_aead() {
                l.len() - 4
            } else {
                l.len() - suite.rtcp_overhead()
            };
            let word = u32::from_be_bytes(l[word_at..word_at + 4].try_into().unwrap());
            assert_eq!(word & 0x8000_0000, 0, "{suite}: libsrtp sets E = 0");
            mirror.set_srtcp_index(0x5eed, word).unwrap();
            let mut m = p.clone();
            mirror.protect_rtcp(&mut m).unwrap();
            assert_eq!(m, l, "{suite}: unencrypted SRTCP differs from libsrtp's");
            assert_eq!(h.packet("rtcp", &lrx, "unprotect", &c).as_ref(), Ok(&p));
            let mut l = l;
            crx.unprotect_rtcp(&mut l).unwrap();
            assert_eq!(l, p);
        }
    }
}
