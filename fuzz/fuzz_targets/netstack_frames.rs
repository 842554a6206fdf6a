//! Fuzzes the userspace stack's receive path; the harness (what an input
//! means and what is checked) is `crates/conflux-netstack/tests/support/frames.rs`,
//! shared with the test that replays the inputs the fuzzer found (the whole
//! test support module comes along).
#![no_main]

#[path = "../../crates/conflux-netstack/tests/support/mod.rs"]
mod support;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(support::frames::run(input));
});
