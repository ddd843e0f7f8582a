//! `serve`: Segment's HTTP Tracking API on this machine, forwarding what it accepts as it arrives, until SIGINT or
//! SIGTERM; then what is queued is forwarded and the summary printed.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use intercom_relay::local::{Local, LocalError, ServeOptions, Tally, serve};
use intercom_relay_lambda::config;
use intercom_relay_lambda::ingest::AllowedOrigins;
use intercom_relay_lambda::ingest::WriteKeys;
use tracing_subscriber::filter::LevelFilter;

use super::args::{IntercomArgs, SettingsArg};
use super::output::{env, out, unchanged};

#[derive(Args)]
pub(crate) struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    #[command(flatten)]
    intercom: IntercomArgs,
    #[command(flatten)]
    settings: SettingsArg,
}

pub(crate) async fn run(args: ServeArgs) -> Result<ExitCode, LocalError> {
    intercom_relay_lambda::logging::init_local(LevelFilter::INFO);
    let (write_keys, generated) = write_keys()?;
    let options = options(&args, write_keys)?;
    let queue = options.queue_url.clone().map_or_else(|| "in memory".to_owned(), |url| format!("SQS {url}"));
    let settings = settings_source(&args.settings);
    let tally = Arc::new(Tally::new(false, false));
    let server = serve(options, args.settings.env(), tally.clone()).await?;
    let local = server.local().clone();
    let key = match &generated {
        Some(key) => format!("{key} (made for this run; set WRITE_KEYS to choose)"),
        None => "from WRITE_KEYS".to_owned(),
    };
    let example_key = generated.as_deref().unwrap_or("$WRITE_KEY");
    out(&format!(
        "Segment HTTP Tracking API on {url}\n  write key: {key}\n  queue:     {queue}\n  Intercom:  {}\n  settings:  {settings}\n\
         Try: curl -u '{example_key}:' -H 'content-type: application/json' -d '{{\"userId\":\"user-1\",\"event\":\"Signed Up\"}}' {url}/v1/track\n\
         Ctrl-C stops it: what is queued is forwarded first.\n",
        local.destination,
        url = server.url,
    ));
    server
        .run(async {
            super::shutdown_signal().await;
            out("Stopping: no new requests; forwarding what is queued (a second Ctrl-C quits at once).\n");
            tokio::spawn(async {
                super::shutdown_signal().await;
                std::process::exit(130);
            });
        })
        .await;
    print_summary(&tally, &local);
    Ok(ExitCode::SUCCESS)
}

/// WRITE_KEYS (and BROWSER_WRITE_KEYS), or a key made for this run, returned too so that it can be printed.
fn write_keys() -> Result<(WriteKeys, Option<String>), LocalError> {
    let (text, generated) = match env("WRITE_KEYS") {
        Some(text) => (text, None),
        None => {
            let key = format!("local-{}", uuid::Uuid::new_v4().simple());
            (key.clone(), Some(key))
        }
    };
    Ok((config::write_keys_of_both_kinds(Some(text), env("BROWSER_WRITE_KEYS"))?, generated))
}

fn options(args: &ServeArgs, write_keys: WriteKeys) -> Result<ServeOptions, LocalError> {
    let allowed_origins = match env("CORS_ALLOWED_ORIGINS") {
        None => AllowedOrigins::Any,
        Some(text) => AllowedOrigins::parse(&text)
            .map_err(|reason| LocalError::Usage(format!("CORS_ALLOWED_ORIGINS is invalid: {reason}")))?,
    };
    let queue_url = env("QUEUE_URL").filter(|url| !url.trim().is_empty());
    let dlq_url = env("DLQ_URL").filter(|url| !url.trim().is_empty());
    if queue_url.is_some() && dlq_url.is_none() {
        // Dead letters kept in memory would be deleted from SQS and gone when the process ends.
        return Err(LocalError::Usage("with QUEUE_URL set, DLQ_URL must name the dead-letter queue too".into()));
    }
    Ok(ServeOptions {
        host: args.host.clone(),
        port: args.port,
        destination: args.intercom.destination(),
        write_keys,
        allowed_origins,
        queue_url,
        dlq_url,
    })
}

/// Where the settings come from, for the banner.
fn settings_source(settings: &SettingsArg) -> String {
    match (&settings.file, env("RELAY_SETTINGS"), env("RELAY_SETTINGS_FILE")) {
        (Some(file), _, _) => file.display().to_string(),
        (None, Some(_), _) => "from RELAY_SETTINGS".to_owned(),
        (None, None, Some(file)) => file,
        (None, None, None) => "the defaults (everything forwarded)".to_owned(),
    }
}

fn print_summary(tally: &Tally, local: &Local) {
    let report = tally.report();
    for letter in &report.dead_lettered {
        let id = letter.message_id.as_deref().unwrap_or("-");
        out(&format!("dead-lettered {id} ({}): {}\n", letter.source, letter.reason));
    }
    let held = match (local.sandbox_summary(), &local.sandbox) {
        (Some(held), Some(sandbox)) => {
            format!("Intercom ({}) holds {held}; {}.\n", local.destination, unchanged(sandbox))
        }
        _ => String::new(),
    };
    out(&format!("Stopped. {}{held}", report.summary()));
}
