#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_nat::turn::server::fuzz::turn_server_input(data));
