#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_crypto::at_rest::fuzz_open(data));
