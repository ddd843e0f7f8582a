//! The one progress bar: on stderr, only when stderr is a terminal, redrawn by a ticker until dropped.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

pub(crate) struct Bar {
    bar: ProgressBar,
    ticker: JoinHandle<()>,
}

impl Bar {
    /// A bar drawn with `template` (indicatif's), which `tick` brings up to date every `every`; none when stderr is
    /// not a terminal, so logs and pipes get no control characters.
    pub(crate) fn start(
        template: &str,
        every: Duration,
        mut tick: impl FnMut(&ProgressBar) + Send + 'static,
    ) -> Option<Bar> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::new(0);
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
        let drawn = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tick(&drawn);
                tokio::time::sleep(every).await;
            }
        });
        Some(Bar { bar, ticker })
    }

    /// The bar, to print a line above it (`ProgressBar::suspend`).
    pub(crate) fn handle(&self) -> ProgressBar {
        self.bar.clone()
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
