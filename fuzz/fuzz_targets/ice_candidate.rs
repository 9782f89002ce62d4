#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_nat::ice::fuzz::ice_candidate(data));
