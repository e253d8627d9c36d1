//! `graymesh validate -f PATH...`: the same all-or-nothing load pilot does, without serving, and
//! the checks of OAM Applications (`core.oam.dev/v1beta1`), which pilot does not take yet.
//!
//! An Application is valid when it passes its own checks and every state of its rollout (each
//! step, promoted, rolled back) translates to a VirtualService and DestinationRule that pass the
//! Istio checks pilot applies to its store.

use clap::Args;
use graymesh_model::oam::Application;
use graymesh_model::{build_config_set, parse_documents, ModelError};
use graymesh_release::{generate, RolloutState};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or directories of Istio objects and OAM Applications (YAML or JSON); repeat for
    /// several.
    #[arg(short = 'f', long = "filename", required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn run(args: &ValidateArgs) -> ExitCode {
    match load(&args.paths) {
        Ok(summary) => {
            for line in summary {
                println!("valid: {line}");
            }
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

/// Read, parse and check everything under `paths`; one summary line per kind of content.
fn load(paths: &[PathBuf]) -> Result<Vec<String>, Vec<ModelError>> {
    let mut objects = Vec::new();
    let mut applications = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let files = match graymesh_sources::dir_store::config_files(path) {
            Ok(files) => files,
            Err(e) => {
                let name = path.display().to_string();
                errors.push(ModelError::in_file(name, format!("cannot read: {e}")));
                continue;
            }
        };
        for file in files {
            let name = file.display().to_string();
            let parsed = std::fs::read_to_string(&file)
                .map_err(|e| vec![ModelError::in_file(&name, format!("cannot read file: {e}"))])
                .and_then(|text| parse_documents(&name, &text));
            match parsed {
                Ok(mut parsed) => {
                    objects.append(&mut parsed.objects);
                    applications.append(&mut parsed.applications);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let only_applications = objects.is_empty() && !applications.is_empty();
    // As pilot's store checks them: Applications in the set too (a hand-written rule for a
    // released host is refused), then what each of their states generates, on its own.
    objects.extend(applications.iter().cloned().map(Application::into_object));
    let config = build_config_set(objects);
    let checked = match &config {
        Ok(_) => {
            let errors: Vec<ModelError> = applications.iter().flat_map(check_generated).collect();
            errors.is_empty().then_some(()).ok_or(errors)
        }
        Err(_) => Ok(()),
    };
    match (config, checked) {
        (Ok(config), Ok(())) => {
            let mut summary = Vec::new();
            if !only_applications {
                let counts: Vec<String> = config
                    .counts()
                    .iter()
                    .filter(|(k, n)| *n > 0 && *k != graymesh_model::Kind::Application)
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect();
                let istio = config.len() - config.applications.len();
                summary.push(format!("{istio} objects ({})", counts.join(", ")));
            }
            summary.extend(applications.iter().map(describe));
            Ok(summary)
        }
        (config, checked) => Err(config
            .err()
            .into_iter()
            .chain(checked.err())
            .flatten()
            .collect()),
    }
}

/// The objects every state of `app`'s rollout implies, each pair checked as pilot checks a store.
fn check_generated(app: &Application) -> Vec<ModelError> {
    let mut errors = Vec::new();
    for state in RolloutState::all(app) {
        let found = match generate(app, state) {
            Ok(generated) => {
                let objects = generated.objects().map(|o| o.clone()).to_vec();
                build_config_set(objects).err().unwrap_or_default()
            }
            Err(e) => vec![ModelError::in_file(&app.origin.file, e.to_string())],
        };
        errors.extend(found.into_iter().map(|e| ModelError {
            message: format!("in the objects generated for {state}: {}", e.message),
            ..e
        }));
    }
    errors
}

fn describe(app: &Application) -> String {
    let steps = app.spec.workflow.len();
    format!(
        "{}: {steps} steps; each step, promoted and rolled back translate to a valid VirtualService and DestinationRule",
        app.display_name()
    )
}
