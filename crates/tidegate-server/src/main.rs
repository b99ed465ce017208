//! The `tidegate` binary: parses the command line, loads the configuration, sets up logging
//! and runs the server of [`tidegate_server`] until SIGINT or SIGTERM; `tidegate passwd` prints
//! the argon2id hash of a password read from standard input; `tidegate tenant ...` manages the
//! tenants of a running gateway through its admin API.

use anyhow::Context as _;
use clap::Parser as _;
use tidegate_server::cli::{Cli, Command, PasswdArgs, ServeArgs};
use tidegate_server::tenant_cli::TenantArgs;
use tidegate_server::{Server, dev_cert, logging, shutdown};

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
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        server.serve(shutdown::os_signal()).await
    })?;
    Ok(())
}
