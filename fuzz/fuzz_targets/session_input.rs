#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_media::fuzz::session_input(data));
