#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_hostcache::fuzz::shared_xml(data));
