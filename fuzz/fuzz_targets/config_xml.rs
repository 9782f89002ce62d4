#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_hostcache::fuzz::config_xml(data));
