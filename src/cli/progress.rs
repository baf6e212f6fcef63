//! Following a Job to its end: a progress bar with rate and ETA on a terminal (nothing
//! but the result otherwise), the work's own lines with --verbose, Ctrl-C to cancel.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use zbus::message::Type;
use zbus::zvariant::OwnedObjectPath;
use zbus::{MatchRule, MessageStream};

use super::args::FollowArgs;
use super::commands::Session;
use super::error::CliError;
use crate::api::JOB_INTERFACE;
use crate::client::{JobProxy, SERVICE};

/// How often the bar asks for the Job's progress.
const POLL: Duration = Duration::from_millis(200);
/// Bar positions: the fraction in thousandths.
const STEPS: u64 = 1000;

impl Session {
    /// Subscribes to every Job's signals. Called before the method that starts the Job,
    /// so that the end of a Job quicker than our next call is not missed.
    pub(super) async fn job_signals(&self) -> Result<MessageStream, CliError> {
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(SERVICE)?
            .interface(JOB_INTERFACE)?
            .build();
        Ok(MessageStream::for_match_rule(rule, &self.conn, Some(1024)).await?)
    }

    /// Waits for the Job at `path` to complete; its failure message becomes the error.
    pub(super) async fn follow(
        &self,
        mut signals: MessageStream,
        path: OwnedObjectPath,
        what: &str,
        opts: &FollowArgs,
    ) -> Result<(), CliError> {
        let job = JobProxy::builder(&self.conn)
            .path(path.clone())?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let bar = (!opts.no_progress && std::io::stderr().is_terminal()).then(|| new_bar(what));
        let bytes = job.unit().await.map(|u| u == "bytes").unwrap_or(false);
        let started = Instant::now();
        let mut poll = tokio::time::interval(POLL);
        // One listener for the whole wait: a Ctrl-C between two turns of the loop below
        // must not be lost.
        let mut interrupts =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut cancels = 0;
        loop {
            tokio::select! {
                msg = signals.next() => {
                    let Some(Ok(msg)) = msg else {
                        return Err(CliError::DBus(format!("lost berthd while waiting for {what}")));
                    };
                    let hdr = msg.header();
                    if hdr.path().map(|p| p.as_str()) != Some(path.as_str()) {
                        continue;
                    }
                    match hdr.member().map(|m| m.as_str()) {
                        Some("Message") if opts.verbose => {
                            let line: String = msg.body().deserialize()?;
                            match &bar {
                                Some(b) => b.println(line),
                                None => eprintln!("{line}"),
                            }
                        }
                        Some("Completed") => {
                            let (success, message): (bool, String) = msg.body().deserialize()?;
                            if let Some(b) = &bar {
                                b.finish_and_clear();
                            }
                            return if success { Ok(()) } else { Err(CliError::DBus(message)) };
                        }
                        _ => {}
                    }
                }
                _ = poll.tick(), if bar.is_some() => {
                    // The Job may have just completed: its Completed signal is on its way.
                    if let (Ok(f), Ok(rate), Some(b)) = (job.progress().await, job.rate().await, &bar) {
                        b.set_position((f * STEPS as f64) as u64);
                        b.set_message(rate_and_eta(f, rate, bytes, started.elapsed()));
                    }
                }
                _ = interrupts.recv() => {
                    cancels += 1;
                    if cancels > 1 {
                        return Err(CliError::DBus(format!("stopped waiting; {what} may still be cancelling")));
                    }
                    if let Some(b) = &bar {
                        b.set_prefix("cancelling");
                    } else {
                        eprintln!("cancelling {what}...");
                    }
                    job.cancel().await?;
                }
            }
        }
    }
}

fn new_bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(STEPS), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {percent:>3}% {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

/// "12.3 MiB/s, 0:42 left", or "3.1 steps/s" while the end can't be told yet.
fn rate_and_eta(fraction: f64, rate: f64, bytes: bool, elapsed: Duration) -> String {
    let rate = if bytes {
        format!("{}/s", HumanBytes(rate as u64))
    } else {
        format!("{rate:.1} steps/s")
    };
    if fraction < 0.01 {
        return rate;
    }
    let left = elapsed.as_secs_f64() * (1.0 - fraction) / fraction;
    let left = left as u64;
    format!("{rate}, {}:{:02} left", left / 60, left % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_from_fraction_and_elapsed() {
        assert_eq!(
            rate_and_eta(0.5, 2048.0, true, Duration::from_secs(30)),
            "2.00 KiB/s, 0:30 left"
        );
        assert_eq!(
            rate_and_eta(0.0, 1.5, false, Duration::from_secs(3)),
            "1.5 steps/s"
        );
        assert_eq!(
            rate_and_eta(0.25, 1.0, false, Duration::from_secs(60)),
            "1.0 steps/s, 3:00 left"
        );
    }
}
