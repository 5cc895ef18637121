//! Phoenix benchmarks; see `benches/` in this package.
