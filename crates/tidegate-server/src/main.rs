//! The `tidegate` binary: parses the command line, loads the configuration, sets up logging
//! and runs the server of [`tidegate_server`] until SIGINT or SIGTERM; `tidegate passwd` prints
//! the argon2id hash of a password read from standard input; `tidegate tenant ...` manages the
//! tenants of a running gateway through its admin API.

use anyhow::Context as _;
use clap::Parser as _;
use tidegate_server::cli::{Cli, Command, PasswdArgs, ServeArgs};
use tidegate_server::tenant_cli::TenantArgs;
use tidegate_server::{Server, dev_cert, logging, shutdown};

/// How many tasks a worker runs from its own queue before it takes one from the runtime's
/// shared queue. A worker's own queue holds 256 tasks; with more runnable connections (a
/// tenant flooding through hundreds of them) the rest overflow into the shared queue, and at
/// tokio's default (tuned to about one shared task per millisecond) a quiet client's task that
/// lands there waits behind dozens of rounds of the flood: a quiet tenant's p99 of 40-100 ms
/// under a flood of 200 QoS 1 pairs. Taking every second task from the shared queue cut that
/// 3-5x at no cost in throughput (`scripts/bench-fairness --noisy-pairs 200 --noisy-window 16`
/// and `tidegate-bench pairs`, side by side on this machine); 1 made it worse (seconds).
const GLOBAL_QUEUE_INTERVAL: u32 = 2;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(&args),
        Command::Passwd(args) => passwd(&args),
        Command::Tenant(args) => tenant(&args),
    }
}

fn tenant(args: &TenantArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let output = runtime.block_on(args.run(&mut std::io::stdin().lock()))?;
    println!("{output}");
    Ok(())
}

fn passwd(args: &PasswdArgs) -> anyhow::Result<()> {
    let phc = args.hash_from(&mut std::io::stdin().lock())?;
    println!("{phc}");
    Ok(())
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.load_config()?;
    logging::init(&config.log)?;
    if args.dev {
        let dir = dev_cert::dir(&config.data_dir);
        println!(
            "development mode: clients should trust the CA {}; the server certificate for \
             localhost is {} (key {})",
            dir.join("ca.pem").display(),
            dir.join("server.pem").display(),
            dir.join("server-key.pem").display(),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .global_queue_interval(GLOBAL_QUEUE_INTERVAL)
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        server.serve(shutdown::os_signal()).await
    })?;
    Ok(())
}
