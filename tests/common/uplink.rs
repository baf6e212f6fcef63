//! A way out of a test host to the Debian archive, for the tests that run debootstrap
//! for real (tests/host/uplink.sh: a veth pair into the host and NAT). Dropped, it is
//! gone; a host's own namespace dying takes its end of the pair too.

use super::TestHost;
use std::path::Path;
use std::process::Command;

pub struct Uplink {
    pid: u32,
    index: u32,
}

fn script() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/host/uplink.sh"))
}

impl Uplink {
    pub fn up(host: &TestHost) -> Uplink {
        // One /30 per host: hosts of concurrent tests differ in PID.
        for attempt in 0..16 {
            let index = (host.pid() + attempt) % 250;
            if Path::new(&format!("/sys/class/net/bt-up{index}")).exists() {
                continue;
            }
            let out = Command::new(script())
                .args(["up", &host.pid().to_string(), &index.to_string()])
                .output()
                .expect("uplink.sh runs");
            assert!(
                out.status.success(),
                "uplink.sh up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return Uplink {
                pid: host.pid(),
                index,
            };
        }
        panic!("no free uplink index for test host {}", host.pid());
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["down", &self.pid.to_string(), &self.index.to_string()])
            .status();
    }
}
