//! Randomised simulation: for each seed, a random sequence of operations
//! under a random fault schedule with the faults real clouds have (lost
//! answers, listing lag beyond the declared window, partial balancer
//! changes, members stuck draining, stand-in member ids, empty reads,
//! hung calls, store outages, orchestrator crashes at random or chosen
//! commits, secrets that rotate, launch times that reset), with emergency
//! rollbacks issued while other operations run, several balancers per
//! deployment and a balancer shared with another deployment. Every
//! invariant is checked by referees that read the ground truth (see
//! `simrun/referee.rs` and the strict world of `phoenix_core::sim`) after
//! every operation, and convergence is checked once faults stop. Each seed
//! runs twice and the two event traces must be identical (determinism).
//!
//! `PHOENIX_SIM_SEEDS=N` runs N seeds (default 1000); `PHOENIX_SIM_SEED=S`
//! replays one seed with its trace printed; `PHOENIX_SIM_FIRST=1` stops at
//! the first seed with a violation and prints how many seeds it took.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod simrun;

use simrun::Tally;

fn run_seed_blocking(seed: u64) -> simrun::SeedResult {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(simrun::run_seed(seed))
}

#[test]
fn simulation_keeps_every_invariant() {
    let single: Option<u64> = std::env::var("PHOENIX_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let count: u64 = std::env::var("PHOENIX_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let first_only = std::env::var("PHOENIX_SIM_FIRST").is_ok_and(|v| v == "1");
    let seeds: Vec<u64> = match single {
        Some(s) => vec![s],
        None => (1..=count).collect(),
    };
    let started = std::time::Instant::now();
    let mut faults = 0;
    let mut ops = 0;
    let mut tally = Tally::default();
    let mut failed: Vec<(u64, Vec<String>)> = Vec::new();
    let mut ran = 0;
    for &seed in &seeds {
        ran += 1;
        let first = run_seed_blocking(seed);
        let mut violations = first.violations.clone();
        // Determinism: every tenth seed (and a replayed one) runs twice.
        if single.is_some() || seed % 10 == 0 {
            let second = run_seed_blocking(seed);
            if first.trace != second.trace {
                let at = first
                    .trace
                    .lines()
                    .zip(second.trace.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                violations.push(format!("determinism: the traces differ from event {at}"));
            }
        }
        if single.is_some() {
            println!("{}", first.trace);
        }
        faults += first.faults;
        ops += first.ops;
        tally.add(&first.tally);
        if !violations.is_empty() {
            failed.push((seed, violations));
            if first_only {
                break;
            }
        }
    }
    let total: usize = failed.iter().map(|(_, v)| v.len()).sum();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{ran} seeds in {secs:.1}s ({:.1} seeds/s), {ops} operations ({tally}), {faults} faults injected, {total} violations",
        ran as f64 / secs.max(0.001)
    );
    if let Some((seed, violations)) = failed.first() {
        if first_only {
            println!("first violation after {ran} seed(s), at seed {seed}");
        }
        for (s, v) in failed.iter().take(10) {
            println!("seed {s}: {v:#?}");
        }
        panic!(
            "{} seed(s) violated invariants; replay the first with:\n  PHOENIX_SIM_SEED={seed} cargo test -p phoenix-core --test simulation -- --nocapture\n{violations:#?}",
            failed.len()
        );
    }
}
