//! The OAuth callback's query string, as a browser or an attacker sends it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| valet::fuzzing::callback_query(data));
