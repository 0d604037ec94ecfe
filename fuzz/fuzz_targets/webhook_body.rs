#![no_main]
//! cargo-fuzz target: `parley_fuzz::targets::webhook_body` on every input.

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley_fuzz::targets::webhook_body(data));
