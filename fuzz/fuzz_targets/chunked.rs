#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jarfleet_fuzz::http1::chunked(data));
