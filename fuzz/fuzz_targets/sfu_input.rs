#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_mixer::fuzz::sfu_input(data));
