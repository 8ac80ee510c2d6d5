//! The config file's text: it loads or is refused naming its problems.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| valet::fuzzing::config(data));
