#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_crypto::fuzz::handshake_hello(data));
