#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_nat::fuzz::channel_data(data));
