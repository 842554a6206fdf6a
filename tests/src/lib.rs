//! Integration tests of the conflux workspace live in `tests/`; this library is empty.
#![forbid(unsafe_code)]
