//! The Phoenix cycle on this machine, for real, under live traffic.
//!
//! Servers are processes started from baked, content-addressed images;
//! the embedded balancer proxies to them; a load generator sends 200
//! requests per second throughout. The cycle bakes vN and makes it live,
//! bakes vN+1 and switches blue-green, kills a live server and rolls back,
//! switches again, refreshes every server, reaps, and reports. It exits
//! non-zero if a single request failed.
//!
//! State lives in `.phoenix/` under the working directory: a second run
//! continues the release history and re-adopts the servers still running.
//!
//! ```text
//! cargo run --release --example local_cycle [-- --rate 200 --servers 3 --listen 127.0.0.1:0]
//! cargo run --release --example local_cycle -- --balancer haproxy   (needs haproxy installed)
//! cargo run --release --example local_cycle -- --teardown
//! ```

use std::process::ExitCode;

use clap::Parser;

use examples::local::{
    block_on_main, run_cycle, serve_demo_app_if_asked, BalancerChoice, CycleOptions, LocalStack,
    StackError,
};

/// The Phoenix cycle on this machine, for real, under live traffic.
#[derive(Debug, Parser)]
#[command(name = "local_cycle")]
struct Args {
    /// Remove every server, the images and the state, and stop.
    #[arg(long)]
    teardown: bool,
    /// Requests per second of the load generator.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// Servers per pool.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    servers: u64,
    /// Where the embedded balancer listens (default: any free loopback port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// The working directory (default: .phoenix).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// The balancer: `embedded`, or `haproxy` (Debian's haproxy installed).
    #[arg(long, value_enum, default_value_t = Balancer::Embedded)]
    balancer: Balancer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Balancer {
    Embedded,
    Haproxy,
}

async fn main_async(args: Args) -> Result<bool, StackError> {
    let mut options = examples::local::options()?;
    options.servers = usize::try_from(args.servers).unwrap_or(usize::MAX);
    if let Some(dir) = args.dir {
        options.dir = dir;
    }
    if let Some(listen) = args.listen {
        options.balancer = BalancerChoice::Embedded {
            listen,
            admin: None,
        };
    }
    if args.balancer == Balancer::Haproxy {
        options.balancer = BalancerChoice::Haproxy;
    }
    let stack = LocalStack::open(options).await?;
    if args.teardown {
        let n = stack.teardown().await?;
        println!("removed {n} server(s), the images and the state");
        return Ok(true);
    }
    let report = run_cycle(
        &stack,
        CycleOptions {
            rate: args.rate,
            ..CycleOptions::default()
        },
    )
    .await?;
    println!("\n{report}");
    Ok(report.failed() == 0 && report.phases_ok())
}

fn main() -> ExitCode {
    if let Some(code) = serve_demo_app_if_asked() {
        return code;
    }
    let args = Args::parse();
    block_on_main(async move {
        let ok = main_async(args).await?;
        if !ok {
            eprintln!("the cycle did not complete cleanly (see the report)");
        }
        Ok::<bool, StackError>(ok)
    })
}
