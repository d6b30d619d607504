//! The `steward` binary: parse the command line, run the command, map its failure
//! to an exit code (2: usage or bad input, 1: anything else).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match steward::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match steward::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.error());
            failure.exit_code()
        }
    }
}
