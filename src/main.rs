//! The `intercom-relay` CLI: `replay` files or `serve` the HTTP API through the whole pipeline in one process, against
//! the built-in Intercom sandbox unless told otherwise; `sandbox` runs the sandbox alone; `backfill` sends a CDP's
//! archive. One file per command in `cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
