//! A presented reference (`vref_…`): parsing answers, and nothing random carries a valid tag.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| valet::fuzzing::reference(data));
