//! Published SRTP/SRTCP test vectors, copied from the RFCs (hex; whitespace is
//! ignored). Used by `tests/srtp_vectors.rs`.

// ---------------------------------------------------------------------------------
// RFC 3711 Appendix B.2: AES-CM keystream. Session key and already-shifted session
// salt; SSRC 0, ROC 0, SEQ 0, so the first counter block is the salt * 2^16. The
// keystream segment is 1044512 octets (65282 blocks); the RFC lists its first three
// and last three blocks.
// ---------------------------------------------------------------------------------

/// RFC 3711 B.2 session key.
pub(crate) const B2_SESSION_KEY: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
/// RFC 3711 B.2 session salt (the 14 bytes before the "0000" shift).
pub(crate) const B2_SESSION_SALT: &str = "F0F1F2F3F4F5F6F7F8F9FAFBFCFD";
/// RFC 3711 B.2 keystream segment length in octets.
pub(crate) const B2_SEGMENT_LEN: usize = 1_044_512;
/// RFC 3711 B.2: keystream at counters ...0000, ...0001, ...0002.
pub(crate) const B2_KEYSTREAM_FIRST: &str = "E03EAD0935C95E80E166B16DD92B4EB4
                                      D23513162B02D0F72A43A2FE4A5F97AB
                                      41E95B3BB0A2E8DD477901E4FCA894C0";
/// RFC 3711 B.2: keystream at counters ...FEFF, ...FF00, ...FF01 (the last three).
pub(crate) const B2_KEYSTREAM_LAST: &str = "EC8CDF7398607CB0F2D21675EA9EA1E4
                                     362B7C3C6773516318A077D7FC5073AE
                                     6A2CC3787889374FBEB4C81B17BA6C44";

// ---------------------------------------------------------------------------------
// RFC 3711 Appendix B.3: key derivation (AES-128 PRF, key derivation rate 0).
// ---------------------------------------------------------------------------------

/// RFC 3711 B.3 master key.
pub(crate) const B3_MASTER_KEY: &str = "E1F97A0D3E018BE0D64FA32C06DE4139";
/// RFC 3711 B.3 master salt.
pub(crate) const B3_MASTER_SALT: &str = "0EC675AD498AFEEBB6960B3AABE6";
/// RFC 3711 B.3 cipher key (label 0x00).
pub(crate) const B3_CIPHER_KEY: &str = "C61E7A93744F39EE10734AFE3FF7A087";
/// RFC 3711 B.3 cipher salt (label 0x02).
pub(crate) const B3_CIPHER_SALT: &str = "30CBBC08863D8C85D49DB34A9AE1";
/// RFC 3711 B.3 auth key (label 0x01): the first 20 of the 94 octets the RFC
/// lists, the HMAC-SHA1 key length.
pub(crate) const B3_AUTH_KEY: &str = "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4";

// ---------------------------------------------------------------------------------
// RFC 6188 §7.1: AES-256-CM keystream, same counter blocks as RFC 3711 B.2.
// ---------------------------------------------------------------------------------

/// RFC 6188 §7.1 session key.
pub(crate) const R6188_71_SESSION_KEY: &str = "57f82fe3613fd170a85ec93c40b1f092
                                        2ec4cb0dc025b58272147cc438944a98";
/// RFC 6188 §7.1: keystream at counters ...0000, ...0001, ...0002.
pub(crate) const R6188_71_KEYSTREAM_FIRST: &str = "92bdd28a93c3f52511c677d08b5515a4
                                            9da71b2378a854f67050756ded165bac
                                            63c4868b7096d88421b563b8c94c9a31";
/// RFC 6188 §7.1: keystream at counters ...FEFF, ...FF00, ...FF01.
pub(crate) const R6188_71_KEYSTREAM_LAST: &str = "cea518c90fd91ced9cbb18c078a54711
                                           3dbc4814f4da5f00a08772b63c6a046d
                                           6eb246913062a16891433e97dd01a57f";

// ---------------------------------------------------------------------------------
// RFC 6188 §7.2: AES_256_CM_PRF key derivation.
// ---------------------------------------------------------------------------------

/// RFC 6188 §7.2 master key.
pub(crate) const R6188_72_MASTER_KEY: &str = "f0f04914b513f2763a1b1fa130f10e29
                                       98f6f6e43e4309d1e622a0e332b9f1b6";
/// RFC 6188 §7.2 master salt.
pub(crate) const R6188_72_MASTER_SALT: &str = "3b04803de51ee7c96423ab5b78d2";
/// RFC 6188 §7.2 cipher key (label 0x00).
pub(crate) const R6188_72_CIPHER_KEY: &str = "5ba1064e30ec51613cad926c5a28ef73
                                       1ec7fb397f70a960653caf06554cd8c4";
/// RFC 6188 §7.2 cipher salt (label 0x02).
pub(crate) const R6188_72_CIPHER_SALT: &str = "fa31791685ca444a9e07c6c64e93";
/// RFC 6188 §7.2 auth key (label 0x01).
pub(crate) const R6188_72_AUTH_KEY: &str = "fd9c32d39ed5fbb5a9dc96b30818454d1313dc05";

// ---------------------------------------------------------------------------------
// RFC 7714 §16: SRTP AEAD_AES_128_GCM / AEAD_AES_256_GCM. Session keys are given
// directly: the 128-bit key is 00 01 .. 0f, the 256-bit key 00 01 .. 1f, the salt
// "Quid pro quo". SSRC 5501a0b2, ROC 0, SEQ f17b.
// ---------------------------------------------------------------------------------

/// RFC 7714 §16 AEAD_AES_128_GCM key.
pub(crate) const R7714_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
/// RFC 7714 §16 AEAD_AES_256_GCM key.
pub(crate) const R7714_KEY_256: &str = "000102030405060708090a0b0c0d0e0f
                                 101112131415161718191a1b1c1d1e1f";
/// RFC 7714 §16 salt, the ASCII string "Quid pro quo".
pub(crate) const R7714_SALT: &str = "517569642070726f2071756f";

/// RFC 7714 §16: the RTP packet every SRTP example protects (12-byte header, the
/// 38-byte payload "Gallia est omnis divisa in partes tres").
pub(crate) const R7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c
                             69612065 7374206f 6d6e6973 20646976
                             69736120 696e2070 61727465 73207472
                             6573";

/// RFC 7714 §16.1.1 (encryption) and §16.1.2 (decryption): AEAD_AES_128_GCM.
pub(crate) const R7714_16_1_1_SRTP_128: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3
                                         fb34de6c acba861c 9d7e4bca be633bd5
                                         0d294e6f 42a5f47a 51c7d19b 36de3adf
                                         8833899d 7f27beb1 6a9152cf 765ee439
                                         0cce";
/// RFC 7714 §16.1.3 (tagging) and §16.1.4 (verification): AEAD_AES_128_GCM,
/// authentication only.
pub(crate) const R7714_16_1_3_SRTP_128_TAG_ONLY: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c
                                                  69612065 7374206f 6d6e6973 20646976
                                                  69736120 696e2070 61727465 73207472
                                                  65732249 3f82d2bc e397e9d7 9e3b19aa
                                                  4216";
/// RFC 7714 §16.2.1 (encryption) and §16.2.2 (decryption): AEAD_AES_256_GCM.
pub(crate) const R7714_16_2_1_SRTP_256: &str = "8040f17b 8041f8d3 5501a0b2 32b1de78
                                         a822fe12 ef9f78fa 332e33aa b1801238
                                         9a58e2f3 b50b2a02 76ffae0f 1ba63799
                                         b87b7aa3 db36dfff d6b0f9bb 7878d7a7
                                         6c13";
/// RFC 7714 §16.2.3 (tagging) and §16.2.4 (verification): AEAD_AES_256_GCM,
/// authentication only.
pub(crate) const R7714_16_2_3_SRTP_256_TAG_ONLY: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c
                                                  69612065 7374206f 6d6e6973 20646976
                                                  69736120 696e2070 61727465 73207472
                                                  6573a866 d5910f88 7463067c eefec452
                                                  15d4";

// ---------------------------------------------------------------------------------
// RFC 7714 §17: SRTCP, same keys and salt; sender SSRC 4d617273 ("Mars"), SRTCP
// index 000005d4.
// ---------------------------------------------------------------------------------

/// RFC 7714 §17 SRTCP index.
pub(crate) const R7714_SRTCP_INDEX: u32 = 0x0000_05d4;
/// RFC 7714 §17.1–17.4: the RTCP packet (a sender report) the examples protect.
pub(crate) const R7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032
                              52545020 0000042a 0000e930 4c756e61
                              deadbeef deadbeef deadbeef deadbeef
                              deadbeef";
/// RFC 7714 §17.1: SRTCP AEAD_AES_128_GCM encryption and tagging (E = 1).
pub(crate) const R7714_17_1_SRTCP_128: &str = "81c8000d 4d617273 63e94885 dcdab67c
                                        a727d766 2f6b7e99 7ff5c0f7 6c06f32d
                                        c676a5f1 730d6fda 4ce09b46 86303ded
                                        0bb9275b c84aa458 96cf4d2f c5abf872
                                        45d9eade 800005d4";
/// RFC 7714 §17.2: SRTCP AEAD_AES_256_GCM verification and decryption (E = 1).
pub(crate) const R7714_17_2_SRTCP_256: &str = "81c8000d 4d617273 d50ae4d1 f5ce5d30
                                        4ba297e4 7d470c28 2c3ece5d bffe0a50
                                        a2eaa5c1 110555be 8415f658 c61de047
                                        6f1b6fad 1d1eb30c 4446839f 57ff6f6c
                                        b26ac3be 800005d4";
/// RFC 7714 §17.3: SRTCP AEAD_AES_128_GCM tagging only (E = 0).
pub(crate) const R7714_17_3_SRTCP_128_TAG_ONLY: &str = "81c8000d 4d617273 4e545031 4e545032
                                                 52545020 0000042a 0000e930 4c756e61
                                                 deadbeef deadbeef deadbeef deadbeef
                                                 deadbeef 841dd968 3dd78ec9 2ae58790
                                                 125f62b3 000005d4";
/// RFC 7714 §17.4: SRTCP AEAD_AES_256_GCM tag verification (E = 0).
pub(crate) const R7714_17_4_SRTCP_256_TAG_ONLY: &str = "81c8000d 4d617273 4e545031 4e545032
                                                 52545020 0000042a 0000e930 4c756e61
                                                 deadbeef deadbeef deadbeef deadbeef
                                                 deadbeef 91db4afb feee5a97 8fab4393
                                                 ed2615fe 000005d4";

/// Decodes hex, ignoring whitespace.
///
/// # Panics
/// On a non-hex character or an odd digit count (a typo in this file).
#[must_use]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => panic!("not hex: {}", b as char),
        })
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}
