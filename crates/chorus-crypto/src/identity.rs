//! Identity keys: RSA key pairs that sign, and the public keys that verify them.
//!
//! Keys are generated with the `rsa` crate (from an injected [`Entropy`]), stored as
//! PKCS#8, and used through `ring` for RSA-PSS-SHA256 signing and verification, which
//! is several times faster (`docs/performance.md`). Sizes are 2048, 3072 (default) or
//! 4096 bits; Skype's 1024-bit keys are refused.
//!
//! ```
//! use chorus_crypto::identity::{IdentityKeyPair, KeySize, PublicKey};
//! use chorus_crypto::SystemEntropy;
//!
//! let key = IdentityKeyPair::generate(KeySize::Rsa2048, &mut SystemEntropy::new())?;
//! let signature = key.sign(b"hello")?;
//! key.public_key().verify(b"hello", &signature)?;
//! assert!(key.public_key().verify(b"hullo", &signature).is_err());
//!
//! // Keys travel as PEM: PKCS#8 for the private key, SubjectPublicKeyInfo for the public.
//! let restored = IdentityKeyPair::from_pem(&key.to_pem()?)?;
//! assert_eq!(restored.public_key(), key.public_key());
//! let public = PublicKey::from_pem(&key.public_key().to_pem()?)?;
//! assert_eq!(public.key_id(), key.public_key().key_id());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;
use std::io::Write as _;
use std::path::Path;

use chorus_framing::Entropy;
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PSS_2048_8192_SHA256, RSA_PSS_SHA256, RsaKeyPair, UnparsedPublicKey};
use rsa::pkcs1::{DecodeRsaPublicKey as _, EncodeRsaPublicKey as _};
use rsa::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
    LineEnding,
};
use rsa::traits::PublicKeyParts as _;

use crate::error::{AuthError, Error, KeyError};
use crate::random::RandCore;
use crate::secret::SecretVec;

/// RSA modulus sizes Chorus accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeySize {
    /// 2048 bits: the minimum, for constrained devices and fast tests.
    Rsa2048,
    /// 3072 bits (about 128-bit security): the default.
    #[default]
    Rsa3072,
    /// 4096 bits: login authorities that must last.
    Rsa4096,
}

impl KeySize {
    /// The modulus size in bits.
    #[must_use]
    pub const fn bits(self) -> usize {
        match self {
            Self::Rsa2048 => 2048,
            Self::Rsa3072 => 3072,
            Self::Rsa4096 => 4096,
        }
    }

    /// The size with `bits` bits, if Chorus accepts it.
    #[must_use]
    pub const fn from_bits(bits: usize) -> Option<Self> {
        match bits {
            2048 => Some(Self::Rsa2048),
            3072 => Some(Self::Rsa3072),
            4096 => Some(Self::Rsa4096),
            _ => None,
        }
    }

    /// Length of a signature made with a key of this size.
    #[must_use]
    pub const fn signature_len(self) -> usize {
        self.bits() / 8
    }
}

/// The largest signature any accepted key makes (4096 bits).
pub const MAX_SIGNATURE_LEN: usize = 512;
/// The largest PKCS#1 public key encoding of an accepted key (4096 bits, with margin).
pub const MAX_PUBLIC_KEY_LEN: usize = 600;

/// SHA-256 of a public key's PKCS#1 encoding: names an issuer in certificates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 32]);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyId(")?;
        for b in self.0.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..)")
    }
}

/// An RSA public key of an accepted size, kept in its PKCS#1 `RSAPublicKey` encoding.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    pkcs1: Box<[u8]>,
    size: KeySize,
}

impl PublicKey {
    /// Parses a PKCS#1 `RSAPublicKey` DER encoding.
    ///
    /// # Errors
    /// [`KeyError::Der`] if it does not parse, [`KeyError::UnsupportedSize`] unless the
    /// modulus is 2048, 3072 or 4096 bits, [`KeyError::Rejected`] if the public
    /// exponent is not 65537.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() > MAX_PUBLIC_KEY_LEN {
            return Err(KeyError::Der.into());
        }
        let key = rsa::PublicKey::from_pkcs1_der(der).map_err(|_| KeyError::Der)?;
        Self::from_rsa(&key)
    }

    /// Parses a DER `SubjectPublicKeyInfo` (what `openssl rsa -pubout -outform DER`
    /// writes).
    ///
    /// # Errors
    /// As [`PublicKey::from_pkcs1_der`].
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        let key = rsa::PublicKey::from_public_key_der(der).map_err(|_| KeyError::Der)?;
        Self::from_rsa(&key)
    }

    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) block.
    ///
    /// # Errors
    /// [`KeyError::Pem`] if it is not such a block, otherwise as
    /// [`PublicKey::from_pkcs1_der`].
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let key = rsa::PublicKey::from_public_key_pem(pem).map_err(|_| KeyError::Pem)?;
        Self::from_rsa(&key)
    }

    fn from_rsa(key: &rsa::PublicKey) -> Result<Self, Error> {
        let bits = key.n().bit_width() as usize;
        let size = KeySize::from_bits(bits).ok_or(KeyError::UnsupportedSize { bits })?;
        if key.e_bytes().as_ref() != [0x01, 0x00, 0x01] {
            return Err(KeyError::Rejected.into());
        }
        let pkcs1 = key.to_pkcs1_der().map_err(|_| KeyError::Der)?;
        Ok(Self {
            pkcs1: pkcs1.as_bytes().into(),
            size,
        })
    }

    /// The PKCS#1 `RSAPublicKey` DER encoding (what certificates carry).
    #[must_use]
    pub fn as_pkcs1_der(&self) -> &[u8] {
        &self.pkcs1
    }

    /// The DER `SubjectPublicKeyInfo` encoding.
    ///
    /// # Errors
    /// [`KeyError::Der`] if encoding fails (it does not for keys this type accepted).
    pub fn to_spki_der(&self) -> Result<Vec<u8>, Error> {
        let key = rsa::PublicKey::from_pkcs1_der(&self.pkcs1).map_err(|_| KeyError::Der)?;
        Ok(key
            .to_public_key_der()
            .map_err(|_| KeyError::Der)?
            .into_vec())
    }

    /// The PEM `PUBLIC KEY` encoding.
    ///
    /// # Errors
    /// As [`PublicKey::to_spki_der`].
    pub fn to_pem(&self) -> Result<String, Error> {
        let key = rsa::PublicKey::from_pkcs1_der(&self.pkcs1).map_err(|_| KeyError::Der)?;
        key.to_public_key_pem(LineEnding::LF)
            .map_err(|_| KeyError::Pem.into())
    }

    /// The key's size.
    #[must_use]
    pub const fn size(&self) -> KeySize {
        self.size
    }

    /// SHA-256 of the PKCS#1 encoding.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        let d = digest::digest(&digest::SHA256, &self.pkcs1);
        let mut id = [0u8; 32];
        id.copy_from_slice(d.as_ref());
        KeyId(id)
    }

    /// Checks an RSA-PSS-SHA256 signature over `message`.
    ///
    /// # Errors
    /// [`AuthError::BadSignature`] if it does not verify.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        if signature.len() != self.size.signature_len() {
            return Err(AuthError::BadSignature.into());
        }
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, &self.pkcs1)
            .verify(message, signature)
            .map_err(|_| AuthError::BadSignature.into())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("size", &self.size)
            .field("id", &self.key_id())
            .finish()
    }
}

/// An RSA key pair that signs with RSA-PSS-SHA256.
///
/// Signing draws its PSS salt from ring's own system generator, which ring does not
/// let callers replace; everything else about the key is deterministic given the
/// [`Entropy`] it was generated from.
pub struct IdentityKeyPair {
    signer: RsaKeyPair,
    pkcs8: SecretVec,
    public: PublicKey,
    rng: SystemRandom,
}

impl IdentityKeyPair {
    /// Generates a key pair of `size` from `entropy`, which must be cryptographically
    /// secure outside tests.
    ///
    /// # Errors
    /// [`KeyError::Generation`] if generation fails, [`Error::Entropy`] if the source
    /// does.
    pub fn generate(size: KeySize, entropy: &mut dyn Entropy) -> Result<Self, Error> {
        let key = rsa::PrivateKey::new(&mut RandCore(entropy), size.bits())
            .map_err(|_| KeyError::Generation)?;
        let der = key.to_pkcs8_der().map_err(|_| KeyError::Generation)?;
        Self::from_pkcs8_der(der.as_bytes())
    }

    /// Loads a PKCS#8 DER private key.
    ///
    /// # Errors
    /// [`KeyError::Der`] if it does not parse, [`KeyError::UnsupportedSize`] for sizes
    /// other than 2048/3072/4096 bits, [`KeyError::Rejected`] if ring refuses it.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let parsed = rsa::PrivateKey::from_pkcs8_der(der).map_err(|_| KeyError::Der)?;
        let public = PublicKey::from_rsa(&parsed.to_public_key())?;
        let signer = RsaKeyPair::from_pkcs8(der).map_err(|_| KeyError::Rejected)?;
        Ok(Self {
            signer,
            pkcs8: SecretVec::new(der.to_vec()),
            public,
            rng: SystemRandom::new(),
        })
    }

    /// Loads a PEM `PRIVATE KEY` (PKCS#8) block.
    ///
    /// # Errors
    /// [`KeyError::Pem`] if it is not one, otherwise as
    /// [`IdentityKeyPair::from_pkcs8_der`].
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let key = rsa::PrivateKey::from_pkcs8_pem(pem).map_err(|_| KeyError::Pem)?;
        let der = key.to_pkcs8_der().map_err(|_| KeyError::Der)?;
        Self::from_pkcs8_der(der.as_bytes())
    }

    /// The PKCS#8 DER encoding. Secret: store it only where the user's keys belong.
    #[must_use]
    pub fn pkcs8_der(&self) -> &SecretVec {
        &self.pkcs8
    }

    /// The PEM `PRIVATE KEY` encoding, zeroized when dropped.
    ///
    /// # Errors
    /// [`KeyError::Der`] if re-encoding fails.
    pub fn to_pem(&self) -> Result<zeroize::Zeroizing<String>, Error> {
        let key =
            rsa::PrivateKey::from_pkcs8_der(self.pkcs8.expose()).map_err(|_| KeyError::Der)?;
        key.to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| KeyError::Pem.into())
    }

    /// Reads a key from a PEM or DER (PKCS#8) file.
    ///
    /// # Errors
    /// [`KeyFileError::Io`] if the file cannot be read, [`KeyFileError::Key`] if its
    /// content is not a usable key.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        let bytes = zeroize::Zeroizing::new(std::fs::read(path)?);
        let key = match std::str::from_utf8(&bytes) {
            Ok(text) if text.trim_start().starts_with("-----BEGIN") => Self::from_pem(text),
            _ => Self::from_pkcs8_der(&bytes),
        };
        Ok(key?)
    }

    /// Writes the key as PEM to `path`, readable only by the owner on Unix, replacing
    /// any existing file atomically (temporary file, fsync, rename).
    ///
    /// # Errors
    /// [`KeyFileError::Io`] if writing fails.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyFileError> {
        let path = path.as_ref();
        let pem = self.to_pem()?;
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = Path::new(&tmp_name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(tmp)?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(tmp, path)?;
        Ok(())
    }

    /// The public half.
    #[must_use]
    pub const fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `message` with RSA-PSS-SHA256.
    ///
    /// # Errors
    /// [`Error::Entropy`] if the system generator fails.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let mut sig = vec![0u8; self.signer.public().modulus_len()];
        self.signer
            .sign(&RSA_PSS_SHA256, &self.rng, message, &mut sig)
            .map_err(|_| chorus_framing::EntropyError)?;
        Ok(sig)
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Loading or saving a key file failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read or written.
    Io(std::io::Error),
    /// The file's content is not a usable key.
    Key(Error),
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "key file: {e}"),
            Self::Key(e) => write!(f, "key file: {e}"),
        }
    }
}

impl std::error::Error for KeyFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Key(e) => Some(e),
        }
    }
}

impl From<std::io::Error> for KeyFileError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<Error> for KeyFileError {
    fn from(e: Error) -> Self {
        Self::Key(e)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use chorus_framing::SeededEntropy;

    use super::*;

    /// Test keys, generated once per test binary from fixed seeds.
    pub(crate) fn test_key(n: usize) -> &'static IdentityKeyPair {
        static KEYS: OnceLock<Vec<IdentityKeyPair>> = OnceLock::new();
        let keys = KEYS.get_or_init(|| {
            (0..4)
                .map(|i| {
                    IdentityKeyPair::generate(KeySize::Rsa2048, &mut SeededEntropy::new(i))
                        .expect("key generation")
                })
                .collect()
        });
        &keys[n]
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let (a, b) = (test_key(0), test_key(1));
        let sig = a.sign(b"message").unwrap();
        assert_eq!(sig.len(), 256);
        a.public_key().verify(b"message", &sig).unwrap();
        assert_eq!(
            a.public_key().verify(b"massage", &sig),
            Err(Error::Auth(AuthError::BadSignature))
        );
        assert_eq!(
            b.public_key().verify(b"message", &sig),
            Err(Error::Auth(AuthError::BadSignature))
        );
        assert_eq!(
            a.public_key().verify(b"message", &sig[1..]),
            Err(Error::Auth(AuthError::BadSignature))
        );
    }

    #[test]
    fn seeded_generation_is_reproducible() {
        let again =
            IdentityKeyPair::generate(KeySize::Rsa2048, &mut SeededEntropy::new(0)).unwrap();
        assert_eq!(again.public_key(), test_key(0).public_key());
        assert_ne!(test_key(0).public_key(), test_key(1).public_key());
    }

    #[test]
    fn keys_round_trip_through_pem_and_der() {
        let key = test_key(2);
        let from_der = IdentityKeyPair::from_pkcs8_der(key.pkcs8_der().expose()).unwrap();
        assert_eq!(from_der.public_key(), key.public_key());
        let pem = key.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let public = key.public_key();
        assert_eq!(
            &PublicKey::from_pem(&public.to_pem().unwrap()).unwrap(),
            public
        );
        assert_eq!(
            &PublicKey::from_spki_der(&public.to_spki_der().unwrap()).unwrap(),
            public
        );
        assert_eq!(
            &PublicKey::from_pkcs1_der(public.as_pkcs1_der()).unwrap(),
            public
        );
        assert_eq!(public.size(), KeySize::Rsa2048);
    }

    #[test]
    fn bad_key_material_gives_clear_errors() {
        assert_eq!(
            IdentityKeyPair::from_pem("not pem").unwrap_err(),
            Error::Key(KeyError::Pem)
        );
        assert_eq!(
            IdentityKeyPair::from_pkcs8_der(&[0x30, 0x03, 1, 2, 3]).unwrap_err(),
            Error::Key(KeyError::Der)
        );
        assert_eq!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")
                .unwrap_err(),
            Error::Key(KeyError::Pem)
        );
        assert_eq!(
            PublicKey::from_pkcs1_der(&[0; 10]).unwrap_err(),
            Error::Key(KeyError::Der)
        );
        assert_eq!(
            PublicKey::from_pkcs1_der(&[0; 4096]).unwrap_err(),
            Error::Key(KeyError::Der)
        );
        // A private key PEM is not a public key PEM.
        let private_pem = test_key(0).to_pem().unwrap();
        assert_eq!(
            PublicKey::from_pem(&private_pem).unwrap_err(),
            Error::Key(KeyError::Pem)
        );
    }

    #[test]
    fn small_keys_are_refused() {
        let small = rsa::PrivateKey::new(&mut RandCore(&mut SeededEntropy::new(9)), 1024).unwrap();
        let der = small.to_pkcs8_der().unwrap();
        assert_eq!(
            IdentityKeyPair::from_pkcs8_der(der.as_bytes()).unwrap_err(),
            Error::Key(KeyError::UnsupportedSize { bits: 1024 })
        );
        let public = small.to_public_key().to_pkcs1_der().unwrap();
        assert_eq!(
            PublicKey::from_pkcs1_der(public.as_bytes()).unwrap_err(),
            Error::Key(KeyError::UnsupportedSize { bits: 1024 })
        );
    }

    #[test]
    fn key_files_round_trip_and_bad_files_fail_clearly() {
        let dir = std::env::temp_dir().join(format!("chorus-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("id.pem");
        test_key(3).save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            IdentityKeyPair::load(&path).unwrap().public_key(),
            test_key(3).public_key()
        );
        let der_path = dir.join("id.der");
        std::fs::write(&der_path, test_key(3).pkcs8_der().expose()).unwrap();
        assert_eq!(
            IdentityKeyPair::load(&der_path).unwrap().public_key(),
            test_key(3).public_key()
        );
        std::fs::write(&der_path, b"\x30\x82garbage").unwrap();
        assert!(matches!(
            IdentityKeyPair::load(&der_path),
            Err(KeyFileError::Key(Error::Key(KeyError::Der)))
        ));
        assert!(matches!(
            IdentityKeyPair::load(dir.join("missing")),
            Err(KeyFileError::Io(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_output_hides_private_material() {
        let shown = format!("{:?}", test_key(0));
        assert!(
            shown.contains("IdentityKeyPair") && shown.len() < 200,
            "{shown}"
        );
    }
}
