//! Multi-step setup that undoes itself on failure (incus' `revert`): each step that
//! leaves something behind registers how to undo it; [`Revert::commit`] keeps everything
//! once the whole operation worked, and [`Revert::check`] undoes the steps so far, newest
//! first, when one fails. A cleanup that fails is reported beside the original cause,
//! never dropped.

use crate::error::{Error, Result};
use std::future::Future;
use std::pin::Pin;
use tracing::warn;

type Undo = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

#[must_use = "a Revert undoes its steps unless committed"]
#[derive(Default)]
pub struct Revert {
    steps: Vec<(String, Undo)>,
}

impl Revert {
    pub fn new() -> Revert {
        Revert::default()
    }

    /// Registers how to undo a step just taken (or about to be). `undo` only runs on
    /// rollback: futures do nothing until polled.
    pub fn add(&mut self, what: &str, undo: impl Future<Output = Result<()>> + Send + 'static) {
        self.steps.push((what.to_string(), Box::pin(undo)));
    }

    /// The operation worked: keep what the steps made.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Passes `Ok` through; on `Err` undoes every step so far and returns the error,
    /// with any cleanup that failed named next to it.
    pub async fn check<T>(&mut self, result: Result<T>) -> Result<T> {
        match result {
            Ok(v) => Ok(v),
            Err(cause) => Err(self.rollback(cause).await),
        }
    }

    /// Undoes every step so far, newest first.
    pub async fn rollback(&mut self, cause: Error) -> Error {
        let mut cleanup = Vec::new();
        while let Some((what, undo)) = self.steps.pop() {
            if let Err(e) = undo.await {
                warn!("cleanup after a failure: {what}: {e}");
                cleanup.push(format!("{what}: {e}"));
            }
        }
        if cleanup.is_empty() {
            cause
        } else {
            Error::Rollback {
                cause: Box::new(cause),
                cleanup,
            }
        }
    }
}

impl Drop for Revert {
    /// Neither committed nor rolled back: the operation was abandoned half way (its
    /// future was dropped). Undo in the background rather than leave its remains.
    fn drop(&mut self) {
        if self.steps.is_empty() {
            return;
        }
        let steps = std::mem::take(&mut self.steps);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let mut revert = Revert { steps };
                    let e = revert
                        .rollback(Error::Failed("operation abandoned".into()))
                        .await;
                    warn!("{e}");
                });
            }
            Err(_) => warn!(
                "an abandoned operation left {} step(s) undone outside a runtime",
                steps.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn log_step(
        log: &Arc<Mutex<Vec<String>>>,
        name: &str,
        ok: bool,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let log = log.clone();
        let name = name.to_string();
        async move {
            log.lock().unwrap().push(name.clone());
            if ok {
                Ok(())
            } else {
                Err(Error::Failed(format!("{name} broke")))
            }
        }
    }

    #[tokio::test]
    async fn undoes_newest_first_and_reports_failed_cleanup() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut revert = Revert::new();
        revert.add("first", log_step(&log, "first", true));
        revert.add("second", log_step(&log, "second", false));
        let err = revert
            .check::<()>(Err(Error::InvalidState("boom".into())))
            .await
            .unwrap_err();
        assert_eq!(*log.lock().unwrap(), ["second", "first"]);
        assert_eq!(err.kind(), crate::error::Kind::InvalidState);
        assert_eq!(
            err.to_string(),
            "boom (and cleaning up failed: second: second broke)"
        );
        revert.commit();
    }

    #[tokio::test]
    async fn commit_keeps_everything() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut revert = Revert::new();
        revert.add("first", log_step(&log, "first", true));
        assert_eq!(revert.check(Ok(5)).await.unwrap(), 5);
        revert.commit();
        tokio::task::yield_now().await;
        assert!(log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_revert_undoes_in_the_background() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut revert = Revert::new();
            revert.add("first", log_step(&log, "first", true));
        }
        for _ in 0..100 {
            if !log.lock().unwrap().is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(*log.lock().unwrap(), ["first"]);
    }
}
