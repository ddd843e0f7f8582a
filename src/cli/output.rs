//! How the commands print: results on stdout, flushed as they come; errors on stderr with exit status 2.

use std::io::Write;
use std::process::ExitCode;

use intercom_relay::local::{Local, LocalError};
use intercom_relay::sandbox::SandboxServer;

pub(crate) fn fail(error: &LocalError) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "intercom-relay: {error}");
    ExitCode::from(2)
}

pub(crate) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

pub(crate) fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `12 calls changed nothing (4 writes, 8 reads)`: refused writes, writes of what was already held, and reads.
pub(crate) fn unchanged(sandbox: &SandboxServer) -> String {
    let calls = sandbox.unchanged_calls();
    format!("{} calls changed nothing ({} writes, {} reads)", calls.total(), calls.writes, calls.reads)
}

/// `Intercom: the built-in sandbox: it holds …; 3 calls changed nothing (…).`, after a run forwarded here.
pub(crate) fn intercom_line(local: &Local) -> String {
    let held = local.sandbox_summary().map(|s| format!(": it holds {s}")).unwrap_or_default();
    let unchanged = local.sandbox.as_ref().map(|s| format!("; {}", unchanged(s))).unwrap_or_default();
    format!("Intercom: {}{held}{unchanged}.\n", local.destination)
}
