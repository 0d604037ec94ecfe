#![no_main]
//! cargo-fuzz target: `parley_fuzz::targets::link_token` on every input.

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley_fuzz::targets::link_token(data));
