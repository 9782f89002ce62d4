//! Host cache benchmarks (work in progress).
fn main() {}
