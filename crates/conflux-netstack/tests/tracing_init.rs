//! A library must not take the process-wide logger: building a stack and
//! then installing a `tracing` subscriber with its `log` forwarding works
//! (its own test binary: the global subscriber is process-wide).

#[path = "../examples/tracing_init.rs"]
mod example;

#[test]
fn the_tracing_init_example_runs_without_panic() {
    example::main();
}
