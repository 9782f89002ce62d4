//! RFC 7914 ("The scrypt Password-Based Key Derivation Function"), section 11: "Test
//! Vectors for PBKDF2 with HMAC-SHA-256". The password and salt are ASCII; the
//! derived keys are copied from the RFC text, whitespace and all.

/// One PBKDF2-HMAC-SHA-256 vector.
pub(crate) struct Pbkdf2Vector {
    /// P.
    pub(crate) password: &'static str,
    /// S.
    pub(crate) salt: &'static str,
    /// c.
    pub(crate) iterations: u32,
    /// dkLen.
    pub(crate) dk_len: usize,
    /// The derived key, hex with the RFC's spacing.
    pub(crate) derived: &'static str,
}

/// Both vectors of RFC 7914 §11.
pub(crate) const RFC7914_SECTION_11: [Pbkdf2Vector; 2] = [
    // PBKDF2-HMAC-SHA-256 (P="passwd", S="salt", c=1, dkLen=64)
    Pbkdf2Vector {
        password: "passwd",
        salt: "salt",
        iterations: 1,
        dk_len: 64,
        derived: "
   55 ac 04 6e 56 e3 08 9f ec 16 91 c2 25 44 b6 05
   f9 41 85 21 6d de 04 65 e6 8b 9d 57 c2 0d ac bc
   49 ca 9c cc f1 79 b6 45 99 16 64 b3 9d 77 ef 31
   7c 71 b8 45 b1 e3 0b d5 09 11 20 41 d3 a1 97 83",
    },
    // PBKDF2-HMAC-SHA-256 (P="Password", S="NaCl", c=80000, dkLen=64)
    Pbkdf2Vector {
        password: "Password",
        salt: "NaCl",
        iterations: 80000,
        dk_len: 64,
        derived: "
   4d dc d8 f6 0b 98 be 21 83 0c ee 5e f2 27 01 f9
   64 1a 44 18 d0 4c 04 14 ae ff 08 87 6b 34 ab 56
   a1 d4 25 a1 22 58 33 54 9a db 84 1b 51 c9 b3 17
   6a 27 2b de bb a1 d0 78 47 8f 62 b3 97 f3 3c 8d",
    },
];

/// The bytes of a whitespace-separated hex string.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}
