//! chorus-crypto benchmarks: RSA signing and verification (ring against the `rsa`
//! crate), the primitives of a handshake and the full handshake, and sealed frames.
//!
//! `cargo bench --bench crypto`; results in docs/performance.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chorus_crypto::Secret;
use chorus_crypto::SystemEntropy;
use chorus_crypto::cert::{Authority, CertificateRequest, Role, TrustStore};
use chorus_crypto::handshake::{Config, ExpectedPeer, Initiator, LocalIdentity, Responder};
use chorus_crypto::identity::{IdentityKeyPair, KeySize};
use chorus_crypto::sealed::SealedChannel;
use chorus_framing::{Frame, SeededEntropy};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::agreement::{EphemeralPrivateKey, UnparsedPublicKey, X25519, agree_ephemeral};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, digest, hkdf, hmac};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};

const SIZES: [KeySize; 3] = [KeySize::Rsa2048, KeySize::Rsa3072, KeySize::Rsa4096];

fn key(size: KeySize, seed: u64) -> IdentityKeyPair {
    IdentityKeyPair::generate(size, &mut SeededEntropy::new(seed)).expect("key generation")
}

/// The operating system's generator for the `rsa` crate.
struct SysRng(SystemRandom);

impl rsa::rand_core::TryRng for SysRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill(dst).expect("system generator");
        Ok(())
    }
}
impl rsa::rand_core::TryCryptoRng for SysRng {}

fn rsa_sign_verify(c: &mut Criterion) {
    let msg = [0x5au8; 64];
    let mut sign = c.benchmark_group("rsa_sign");
    for size in SIZES {
        let k = key(size, size.bits() as u64);
        sign.bench_function(BenchmarkId::new("ring", size.bits()), |b| {
            b.iter(|| k.sign(black_box(&msg)).unwrap());
        });
        let private = rsa::PrivateKey::from_pkcs8_der(k.pkcs8_der().expose()).unwrap();
        let signer = rsa::pss::SigningKey::<rsa::sha2::Sha256>::new(private);
        let mut rng = SysRng(SystemRandom::new());
        sign.bench_function(BenchmarkId::new("rsa-crate", size.bits()), |b| {
            b.iter(|| signer.sign_with_rng(&mut rng, black_box(&msg)));
        });
    }
    sign.finish();

    let mut verify = c.benchmark_group("rsa_verify");
    for size in SIZES {
        let k = key(size, size.bits() as u64);
        let sig = k.sign(&msg).unwrap();
        let public = k.public_key().clone();
        verify.bench_function(BenchmarkId::new("ring", size.bits()), |b| {
            b.iter(|| public.verify(black_box(&msg), black_box(&sig)).unwrap());
        });
        let private = rsa::PrivateKey::from_pkcs8_der(k.pkcs8_der().expose()).unwrap();
        let verifier = rsa::pss::VerifyingKey::<rsa::sha2::Sha256>::new(private.to_public_key());
        let rsa_sig = rsa::pss::Signature::try_from(sig.as_slice()).unwrap();
        assert_eq!(rsa_sig.to_bytes().as_ref(), sig.as_slice());
        verify.bench_function(BenchmarkId::new("rsa-crate", size.bits()), |b| {
            b.iter(|| {
                verifier
                    .verify(black_box(&msg), black_box(&rsa_sig))
                    .unwrap()
            });
        });
    }
    verify.finish();
}

struct Parties {
    initiator: Config,
    responder: Config,
    signer: IdentityKeyPair,
    /// The authority's key pair (the same seed as the one that issued the
    /// certificates): a second signer, as a certificate's issuer is.
    authority: IdentityKeyPair,
}

fn parties(size: KeySize) -> Parties {
    let now = SystemTime::now();
    let authority = Authority::new(key(size, 1));
    let mut trust = TrustStore::new();
    trust.add_authority(authority.public_key().clone());
    let trust = Arc::new(trust);
    let ident = |seed: u64, name: &str, role: Role| {
        let k = key(size, seed);
        let cert = authority
            .issue(&CertificateRequest {
                username: name.into(),
                public_key: k.public_key().clone(),
                role,
                serial: seed,
                // An hour of slack: the bench reads the clock before these are issued.
                not_before: now - Duration::from_secs(3_600),
                not_after: now + Duration::from_secs(86_400),
            })
            .unwrap();
        Arc::new(LocalIdentity::new(k, cert).unwrap())
    };
    Parties {
        initiator: Config::new(
            ident(2, "alice", Role::User),
            trust.clone(),
            ExpectedPeer::user("sn-1", &[Role::SuperNode]),
        ),
        responder: Config::new(
            ident(3, "sn-1", Role::SuperNode),
            trust,
            ExpectedPeer::accept_any_user(),
        ),
        signer: key(size, 2),
        authority: key(size, 1),
    }
}

/// One handshake's key schedule: an extract and the expansions both sides perform.
fn hkdf_schedule(shared: &[u8]) {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"chorus handshake v1").extract(shared);
    let mut out = [0u8; 32];
    for label in [
        &b"r key"[..],
        b"i key",
        b"r fin",
        b"i fin",
        b"i2r key",
        b"i2r iv",
        b"r2i key",
        b"r2i iv",
        b"exporter",
    ] {
        prk.expand(&[label, &[0u8; 32]], hkdf::HKDF_SHA256)
            .unwrap()
            .fill(&mut out)
            .unwrap();
    }
}

fn handshake(c: &mut Criterion) {
    let now = SystemTime::now();
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    for size in [KeySize::Rsa2048, KeySize::Rsa3072] {
        let p = parties(size);
        let mut rng = SystemEntropy::new();
        g.bench_function(BenchmarkId::new("full_both_sides", size.bits()), |b| {
            b.iter(|| {
                let (i, hello) = Initiator::start(&p.initiator, &mut rng).unwrap();
                let (r, response) =
                    Responder::handle_hello(&p.responder, &hello, &mut rng).unwrap();
                let (a, finish) = i.handle_response(&response, now).unwrap();
                let s = r.handle_finish(&finish, now).unwrap();
                black_box((a, s))
            });
        });

        // What a handshake cannot avoid, both sides together: two signatures, two
        // certificate verifications and two transcript signature verifications, two
        // X25519 key pairs and agreements, and the HKDF schedule on each side.
        let msg = [7u8; 62];
        let sig = p.signer.sign(&msg).unwrap();
        let public = p.signer.public_key().clone();
        // The certificate check: a signature made by another key pair (the authority),
        // verified with that pair's public key. Checked once here, so the timed loop
        // measures a verification that succeeds.
        let authority_sig = p.authority.sign(&msg).unwrap();
        let authority = p.authority.public_key().clone();
        authority
            .verify(&msg, &authority_sig)
            .expect("the authority's signature verifies");
        assert!(
            public.verify(&msg, &authority_sig).is_err(),
            "the authority is another key pair than the handshake signer"
        );
        let ring_rng = SystemRandom::new();
        g.bench_function(BenchmarkId::new("primitives_sum", size.bits()), |b| {
            b.iter(|| {
                for _ in 0..2 {
                    black_box(p.signer.sign(&msg).unwrap());
                    public.verify(&msg, &sig).unwrap();
                    // Same cost as verifying the authority's signature on a certificate.
                    authority.verify(&msg, &authority_sig).unwrap();
                    let mine = EphemeralPrivateKey::generate(&X25519, &ring_rng).unwrap();
                    let theirs = EphemeralPrivateKey::generate(&X25519, &ring_rng).unwrap();
                    let their_public = theirs.compute_public_key().unwrap();
                    black_box(mine.compute_public_key().unwrap());
                    agree_ephemeral(
                        mine,
                        &UnparsedPublicKey::new(&X25519, their_public.as_ref()),
                        hkdf_schedule,
                    )
                    .unwrap();
                }
            });
        });
    }
    g.finish();

    let mut prim = c.benchmark_group("handshake_primitive");
    let ring_rng = SystemRandom::new();
    prim.bench_function("x25519_keypair_and_agree", |b| {
        let peer = EphemeralPrivateKey::generate(&X25519, &ring_rng)
            .unwrap()
            .compute_public_key()
            .unwrap();
        b.iter(|| {
            let mine = EphemeralPrivateKey::generate(&X25519, &ring_rng).unwrap();
            black_box(mine.compute_public_key().unwrap());
            agree_ephemeral(mine, &UnparsedPublicKey::new(&X25519, peer.as_ref()), |s| {
                black_box(s[0])
            })
            .unwrap()
        });
    });
    prim.bench_function("hkdf_schedule", |b| {
        b.iter(|| hkdf_schedule(black_box(&[9u8; 32])))
    });
    prim.bench_function("sha256_2KiB_transcript", |b| {
        let t = [1u8; 2048];
        b.iter(|| digest::digest(&digest::SHA256, black_box(&t)));
    });
    prim.bench_function("hmac_sha256_32B", |b| {
        let k = hmac::Key::new(hmac::HMAC_SHA256, &[3; 32]);
        b.iter(|| hmac::sign(&k, black_box(&[4u8; 32])));
    });
    prim.bench_function("aes256gcm_700B", |b| {
        let k =
            aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &[5; 32]).unwrap());
        let mut buf = vec![6u8; 700];
        b.iter(|| {
            k.seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key([0; 12]),
                aead::Aad::empty(),
                &mut buf,
            )
            .unwrap()
        });
    });
    prim.finish();
}

/// Frames opened per timed iteration of `sealed_frame/open`.
const OPEN_BATCH: usize = 64;

fn sealed_frames(c: &mut Criterion) {
    let (k1, iv1, k2, iv2) = (
        Secret::new([1; 32]),
        Secret::new([2; 12]),
        Secret::new([3; 32]),
        Secret::new([4; 12]),
    );
    let mut g = c.benchmark_group("sealed_frame");
    for size in [64usize, 1024, 16 * 1024] {
        let frame = Frame::data(1, Bytes::from(vec![0x42u8; size]));
        g.throughput(Throughput::Bytes(size as u64));
        let mut tx = SealedChannel::new(&k1, &iv1, &k2, &iv2);
        g.bench_function(BenchmarkId::new("seal", size), |b| {
            b.iter(|| tx.seal(black_box(&frame)).unwrap())
        });
        // Opening needs the frame sealed under the receiver's next counter: seal a
        // batch outside the timing, then open it in order. Throughput counts the batch.
        g.throughput(Throughput::Bytes((size * OPEN_BATCH) as u64));
        g.bench_function(BenchmarkId::new("open", size), |b| {
            b.iter_batched(
                || {
                    let mut tx = SealedChannel::new(&k1, &iv1, &k2, &iv2);
                    let rx = SealedChannel::new(&k2, &iv2, &k1, &iv1);
                    let sealed: Vec<Frame> =
                        (0..OPEN_BATCH).map(|_| tx.seal(&frame).unwrap()).collect();
                    (rx, sealed)
                },
                |(mut rx, sealed)| {
                    for s in &sealed {
                        black_box(rx.open(s).unwrap());
                    }
                },
                criterion::BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    targets = rsa_sign_verify, handshake, sealed_frames
}
criterion_main!(benches);
