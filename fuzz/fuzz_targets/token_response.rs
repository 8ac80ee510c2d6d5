//! A token endpoint's answer: the first byte picks the status and content type, the rest is the body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| valet::fuzzing::token_response(data));
