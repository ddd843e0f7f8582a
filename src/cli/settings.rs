//! `settings check | schema | parameter`: destination settings checked offline, their JSON Schema, and a document as
//! the template's `Settings` parameter.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use intercom_relay::local::LocalError;
use intercom_relay_lambda::settings::{self, Settings};

use super::output::{note, out};

#[derive(Subcommand)]
pub(crate) enum SettingsCommand {
    /// Check a settings document (as RELAY_SETTINGS or RELAY_SETTINGS_FILE would be read) and list every problem by
    /// its path. Exit status: 0 when valid, 1 when not, 2 when the file cannot be read.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the settings document's JSON Schema (as committed in crates/lambda/src/settings/settings.schema.json).
    Schema,
    /// Check a settings document and print it as the template's Settings parameter, quoted for
    /// `sam deploy --parameter-overrides "$(intercom-relay settings parameter FILE)"`.
    Parameter {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// The most the template's `Settings` parameter takes (its MaxLength; Lambda keeps at most 4 KB of environment).
const SETTINGS_PARAMETER_MAX: usize = 3072;

pub(crate) fn run(command: SettingsCommand) -> Result<ExitCode, LocalError> {
    match command {
        SettingsCommand::Schema => {
            out(&format!("{}\n", serde_json::to_string_pretty(&settings::schema()).expect("a schema serialises")));
            Ok(ExitCode::SUCCESS)
        }
        SettingsCommand::Check { file } => check(&file),
        SettingsCommand::Parameter { file } => parameter(&file),
    }
}

fn read(file: &Path) -> Result<String, LocalError> {
    std::fs::read_to_string(file).map_err(|e| LocalError::Usage(format!("cannot read {}: {e}", file.display())))
}

fn check(file: &Path) -> Result<ExitCode, LocalError> {
    match Settings::parse(&read(file)?) {
        Ok(settings) => {
            out(&format!("{}: valid settings.\n{}", file.display(), settings.describe()));
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            note(&format!("{}: {problems}", file.display()));
            Ok(ExitCode::from(1))
        }
    }
}

fn parameter(file: &Path) -> Result<ExitCode, LocalError> {
    let text = read(file)?;
    if let Err(problems) = Settings::parse(&text) {
        note(&format!("{}: {problems}", file.display()));
        return Ok(ExitCode::from(1));
    }
    let mut document: serde_json::Value = serde_json::from_str(&text).expect("checked above");
    // Only editors read `$schema`; the deployed function does not need the bytes.
    document.as_object_mut().map(|members| members.shift_remove("$schema"));
    let compact = serde_json::to_string(&document).expect("JSON serialises");
    if compact.len() > SETTINGS_PARAMETER_MAX {
        note(&format!(
            "{}: is {} bytes as one line; the Settings parameter takes at most {SETTINGS_PARAMETER_MAX}",
            file.display(),
            compact.len()
        ));
        return Ok(ExitCode::from(1));
    }
    // SAM CLI reads `Key="value"` with backslash escapes: a JSON string literal of the document is exactly that.
    out(&format!("Settings={}\n", serde_json::Value::String(compact)));
    Ok(ExitCode::SUCCESS)
}
