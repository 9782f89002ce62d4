#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_index::fuzz::node_input(data));
