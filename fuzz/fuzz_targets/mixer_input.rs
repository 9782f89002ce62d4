#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_mixer::audio::fuzz::mixer_input(data));
