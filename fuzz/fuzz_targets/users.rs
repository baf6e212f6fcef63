//! `PrivateUsers` values (src/security/users.rs `Request`).
//!
//! "no" and "pick" are the words; any other accepted value is a range from above 0 that
//! holds at least one ID, ends below 2^32, and is written back (`BASE:COUNT`) as text
//! that parses to the same range.
#![no_main]

use berth::security::users::Request;
use berth_fuzz::{MESSAGE_MAX, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    match input.parse::<Request>() {
        Ok(Request::No) => assert_eq!(input, "no"),
        Ok(Request::Pick) => assert_eq!(input, "pick"),
        Ok(request @ Request::Range(range)) => {
            assert!(range.base > 0 && range.count > 0, "{input:?}: {range:?}");
            assert!(
                u64::from(range.base) + u64::from(range.count) <= u64::from(u32::MAX),
                "{input:?}: {range:?}"
            );
            assert_eq!(
                range.to_string().parse::<Request>(),
                Ok(request),
                "{input:?}"
            );
            assert_eq!(
                range.map_line(),
                format!("0 {} {}\n", range.base, range.count)
            );
        }
        Err(message) => assert!(
            message.len() <= MESSAGE_MAX,
            "a {}-byte value gives a {}-byte error",
            input.len(),
            message.len()
        ),
    }
});
