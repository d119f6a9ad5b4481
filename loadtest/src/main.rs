//! `halley-load`: parse the command line, run a scenario (or, re-executed by the parent, be a
//! `worker` / `floor-server` child) and print the report.

use std::process::ExitCode;

use clap::Parser;

use halley_load::child;
use halley_load::cli::{Cli, Internal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.internal {
        Some(Internal::Worker) => return exit(child::worker_main()),
        Some(Internal::FloorServer { listen, threads }) => return exit(child::floor_main(&listen, threads)),
        None => {}
    }
    let report = match halley_load::run::run(&cli.run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("halley-load: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.run.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("halley-load: cannot encode the report: {e}"),
        }
    } else {
        print!("{}", report.human());
    }
    if let Some(path) = &cli.run.report {
        if let Err(e) = report.write_chart(path) {
            eprintln!("halley-load: {e}");
            return ExitCode::from(2);
        }
    }
    // A run that lost, duplicated or missed deadlines is a failed run for scripts.
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
