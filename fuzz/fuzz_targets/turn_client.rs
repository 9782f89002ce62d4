#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_nat::turn::client::fuzz::turn_client_input(data));
