//! STUN codec and server benchmarks (filled in below).
fn main() {}
