//! The local commands of the README and docs/ run as written: the quick start's replay, the replay page's, the settings
//! page's. `cargo run --` is the test's own build of `intercom-relay`; each runs in a scratch directory holding
//! `events/`, so that what a command writes (`settings schema > …`) lands there. Commands that need what a reader has and
//! a test has not (their own export, a live token) are left out, named where they are.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::cli::{scratch, text};
use crate::helpers::{doc_section, sh_blocks, without_comment};

/// The commands of `heading`'s `sh` blocks, comments dropped.
fn commands(heading: &str) -> Vec<String> {
    sh_blocks(&doc_section(heading)).concat().iter().filter_map(|command| without_comment(command)).collect()
}

/// Runs `command` with a shell in `dir`, `cargo run [-q|--release] --` standing for the built binary; its stdout.
fn run(dir: &Path, command: &str) -> String {
    let binary = env!("CARGO_BIN_EXE_intercom-relay");
    let command = ["cargo run -q --", "cargo run --release --", "cargo run --"]
        .iter()
        .fold(command.to_owned(), |command, cargo| command.replace(cargo, &format!("'{binary}'")));
    assert!(command.contains(binary), "not a command of the relay's: {command}");
    let output = Command::new("sh")
        .args(["-c", &command])
        .current_dir(dir)
        .env_remove("WRITE_KEYS")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{command}: {}{}", text(&output.stdout), text(&output.stderr));
    text(&output.stdout)
}

/// A scratch directory with the repository's `events/` in it.
fn with_events(name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    std::os::unix::fs::symlink(crate::helpers::events_dir(), dir.join("events")).unwrap();
    dir
}

#[test]
fn the_quick_start_replay_prints_the_summary_the_readme_shows() {
    let dir = with_events("docs-quick-start");
    let section = doc_section("## Quick start");
    let replay = commands("## Quick start").into_iter().find(|c| c.contains(" replay ")).expect("a replay command");
    let stdout = run(&dir, &replay);
    // The README's sample output: the counts of its summary line.
    let shown = section.lines().find(|line| line.contains(" accepted, ")).expect("the README's summary line");
    let counts = |line: &str| line.split("; ").take(2).collect::<Vec<_>>().join("; ");
    let summary = stdout.lines().find(|line| line.contains(" accepted, ")).unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(counts(summary), counts(shown), "{stdout}");
}

#[test]
fn the_replay_pages_commands_on_the_samples_run_as_written() {
    let dir = with_events("docs-replay");
    let commands = commands("## `intercom-relay replay PATH…`");
    // Left out: a reader's own export, and a live workspace (tests/it/cli.rs runs both with files and a sandbox).
    let local: Vec<&String> =
        commands.iter().filter(|command| !command.contains("exported.ndjson") && !command.contains("--live")).collect();
    assert_eq!(local.len(), 2, "{commands:?}");
    for command in local {
        run(&dir, command);
    }
}

#[test]
fn the_settings_pages_commands_run_as_written() {
    let dir = with_events("docs-settings");
    let commands = commands("# Destination settings");
    let local: Vec<&String> = commands.iter().filter(|command| !command.starts_with("sam deploy")).collect();
    assert_eq!(local.len(), 3, "check, schema, replay: {commands:?}");
    for command in local {
        run(&dir, command);
    }
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("settings.schema.json")).unwrap()).unwrap();
    assert!(schema["properties"]["events"].is_object(), "{schema}");
}
