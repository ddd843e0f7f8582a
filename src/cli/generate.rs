//! `generate`: a seeded, realistic day of events as NDJSON, a day of page loads, or an archive as Segment writes one.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use intercom_relay::local::{GenerateOptions, LocalError, generate, generate_archive, generate_page_loads};

use super::output::out;

#[derive(Args)]
pub(crate) struct GenerateArgs {
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The first day's start (RFC 3339); the events spread over the `--days` × 24 hours after it.
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    start: String,
    /// Days the events spread over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// Write them as Segment's S3 destination archives events, under DIR/segment-logs/gen-source/<received-day>/
    /// (one gzipped NDJSON file per hour), instead of NDJSON on stdout: a sample archive for `replay`.
    #[arg(long, value_name = "DIR")]
    archive: Option<PathBuf>,
    /// Instead of the mix, a day of page loads in a signed-in app using analytics.js: each load an identify (the same
    /// traits every time) and a page, and for every other user a group (the same company traits every time); the
    /// loads are drawn until the next would pass --events. What a relay that writes only changes should make little of.
    #[arg(long, conflicts_with = "archive")]
    page_loads: bool,
}

pub(crate) fn run(args: GenerateArgs) -> Result<ExitCode, LocalError> {
    let start =
        time::OffsetDateTime::parse(&args.start, &time::format_description::well_known::Rfc3339).map_err(|e| {
            LocalError::Usage(format!("--start must be an RFC 3339 time such as 2026-01-01T00:00:00Z: {e}"))
        })?;
    let options = GenerateOptions { events: args.events, users: args.users, seed: args.seed, start, days: args.days };
    if let Some(dir) = &args.archive {
        let written = generate_archive(&options, dir)
            .map_err(|e| LocalError::Io(format!("cannot write the archive under {}: {e}", dir.display())))?;
        out(&format!(
            "{} events in {} files ({} bytes gzipped) under {}\n",
            written.events,
            written.files,
            written.bytes,
            written.root.display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let written =
        if args.page_loads { generate_page_loads(&options, &mut stdout) } else { generate(&options, &mut stdout) };
    written.and_then(|()| stdout.flush()).map_err(|e| LocalError::Io(format!("cannot write the events: {e}")))?;
    Ok(ExitCode::SUCCESS)
}
