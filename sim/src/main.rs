//! `lro-sim`: the upstream simulator, for the demo, the tests and the benchmark (never shipped
//! in the operator's image).

use std::process::ExitCode;

use clap::Parser;

/// A simulator of the upstream APIs lro-operator speaks to: every protocol, scripted
/// durations, outcomes and faults, plus the `/sim` admin API.
#[derive(Parser, Debug)]
#[command(name = "lro-sim", version)]
struct Cli {
    #[command(flatten)]
    args: lro_sim::SimArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lro_sim::run(cli.args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
