//! Runnable Phoenix programs; see the `examples` in this package
//! (`cargo run --release --example sim_cycle`).
