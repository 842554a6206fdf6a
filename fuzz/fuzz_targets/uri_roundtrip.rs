//! Fuzzes the URI grammar: arbitrary text must never panic the parser (nor
//! overflow its stack); whatever parses prints to text that parses back to an
//! equal value, and printing that value again gives the same text.
#![no_main]

use conflux_uri::Uri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let Ok(uri) = text.parse::<Uri>() else { return };
    let printed = uri.to_string();
    let again = match printed.parse::<Uri>() {
        Ok(u) => u,
        Err(e) => panic!("{text:?} parsed, but its printed form {printed:?} does not: {e}"),
    };
    assert_eq!(again, uri, "{text:?} printed as {printed:?} parses to another value");
    assert_eq!(again.to_string(), printed, "printing {text:?} is not idempotent");
});
