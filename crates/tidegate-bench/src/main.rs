//! tidegate-bench: parses the command line, builds the runtime (single-threaded unless
//! `--threads` asks for more), runs the scenario and prints its report (text, or JSON with
//! `--json`). Everything else lives in the library so it can be unit tested.

use anyhow::{Context, Result};
use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use tidegate_bench::cli::{Cli, CommonArgs, Scenario};
use tidegate_bench::report::Report;
use tidegate_bench::scenario::topology::Shape;
use tidegate_bench::scenario::{conn, conn_children, handshake, http, messaging, storm};

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, no backtrace: this is a user-facing tool, and the scenario errors
            // already carry their causes in their messages.
            eprintln!("tidegate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    tidegate_bench::resources::raise_nofile_limit();
    let common = common_of(&cli.scenario).clone();
    let runtime = if common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(common.threads)
            .enable_all()
            .build()
    }
    .context("cannot build the tokio runtime")?;
    runtime.block_on(run(cli.scenario, common.json))
}

fn common_of(s: &Scenario) -> &CommonArgs {
    match s {
        Scenario::Pairs(m) | Scenario::Fanin(m) | Scenario::Fanout(m) => &m.common,
        Scenario::Conn(c) => &c.common,
        Scenario::Storm(s) => &s.common,
        Scenario::Handshake(h) => &h.common,
        Scenario::Http(h) => &h.msg.common,
    }
}

async fn run(scenario: Scenario, json: bool) -> Result<()> {
    let report: Report = match scenario {
        Scenario::Pairs(m) => messaging::run(Shape::Pairs, &m).await?,
        Scenario::Fanin(m) => messaging::run(Shape::Fanin, &m).await?,
        Scenario::Fanout(m) => messaging::run(Shape::Fanout, &m).await?,
        Scenario::Conn(c) if c.child => return Ok(conn_children::run_child(&c).await?),
        Scenario::Conn(c) => conn::run(&c).await?,
        Scenario::Storm(s) => storm::run(&s).await?,
        Scenario::Handshake(h) => {
            let r = handshake::run(&h).await?;
            return print(json, &r, || r.to_text());
        }
        Scenario::Http(h) => http::run(&h).await?,
    };
    print(json, &report, || report.to_text())
}

/// Prints a report as JSON or as text.
fn print<R: serde::Serialize>(json: bool, report: &R, text: impl FnOnce() -> String) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", text())?;
    }
    Ok(())
}
