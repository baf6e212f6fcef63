//! The one way tests and the harness wait for something to become true: a host booting,
//! a host's processes dying, a machine reaching a state. One helper, so that every wait
//! has a deadline, says what it gave up on, and polls at the same pace.

use std::thread;
use std::time::{Duration, Instant};

/// First pause between two checks; it doubles up to `MAX_PAUSE`, so a condition that is
/// nearly true is seen at once and a slow one costs few checks (many checks run a command
/// in a test host).
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Calls `check` until it returns true (then true), or until `timeout` has passed and a
/// last call still says false (then false, after saying on stderr that it gave up waiting
/// for `what`). `check` may act as well as look (say, kill what remains and try again),
/// and may keep what it saw in variables it captures, for the caller's error message.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        if check() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("gave up after {timeout:?} waiting for {what}");
            return false;
        }
        thread::sleep(pause.min(left));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}
