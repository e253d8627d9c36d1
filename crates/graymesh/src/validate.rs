//! `graymesh validate -f PATH...`: the same all-or-nothing load pilot does, without serving.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or directories of Istio objects (YAML or JSON); repeat for several.
    #[arg(short = 'f', long = "filename", required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn run(args: &ValidateArgs) -> ExitCode {
    match graymesh_sources::dir_store::load_paths(&args.paths) {
        Ok(config) => {
            let counts: Vec<String> = config
                .counts()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            println!("valid: {} objects ({})", config.len(), counts.join(", "));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s); nothing would be applied", errors.len());
            ExitCode::FAILURE
        }
    }
}
