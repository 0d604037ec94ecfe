#![no_main]
//! cargo-fuzz target: `parley_fuzz::targets::agent_frame` on every input.

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley_fuzz::targets::agent_frame(data));
