#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| madx_fuzz::ws_query(data));
