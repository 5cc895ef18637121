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

use examples::local::{
    block_on_main, run_cycle, serve_demo_app_if_asked, BalancerChoice, CycleOptions, LocalStack,
    StackError,
};

struct Args {
    teardown: bool,
    rate: u32,
    servers: usize,
    listen: Option<std::net::SocketAddr>,
    dir: Option<std::path::PathBuf>,
    haproxy: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        teardown: false,
        rate: 200,
        servers: 3,
        listen: None,
        dir: None,
        haproxy: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--teardown" => a.teardown = true,
            "--rate" => a.rate = value("--rate")?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--servers" => {
                a.servers = value("--servers")?.parse().map_err(|e| format!("--servers: {e}"))?
            }
            "--listen" => {
                a.listen = Some(value("--listen")?.parse().map_err(|e| format!("--listen: {e}"))?)
            }
            "--dir" => a.dir = Some(value("--dir")?.into()),
            "--balancer" => match value("--balancer")?.as_str() {
                "embedded" => a.haproxy = false,
                "haproxy" => a.haproxy = true,
                other => return Err(format!("--balancer: embedded or haproxy, not {other}")),
            },
            "-h" | "--help" => {
                return Err("usage: local_cycle [--balancer embedded|haproxy] [--rate N] [--servers N] [--listen ADDR] [--dir DIR] [--teardown]".into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.servers == 0 || a.rate == 0 {
        return Err("--servers and --rate must be at least 1".into());
    }
    Ok(a)
}

async fn main_async(args: Args) -> Result<bool, StackError> {
    let mut options = examples::local::options()?;
    options.servers = args.servers;
    if let Some(dir) = args.dir {
        options.dir = dir;
    }
    if let Some(listen) = args.listen {
        options.balancer = BalancerChoice::Embedded {
            listen,
            admin: None,
        };
    }
    if args.haproxy {
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
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    block_on_main(async move {
        let ok = main_async(args).await?;
        if !ok {
            eprintln!("the cycle did not complete cleanly (see the report)");
        }
        Ok::<bool, StackError>(ok)
    })
}
