//! A machine's config.toml (src/store.rs `MachineConfig`), as `load_config` reads it.
//!
//! Whatever parses is written back by `save_config`'s serializer, reads back to the same
//! value, and is written the same way again (a daemon that loads and saves a config
//! never changes it). Its limits can be sent to either flavour of systemd without a
//! panic, and working out its confinement never panics.
#![no_main]

use berth::limits::{Flavor, LimitError};
use berth::security::Confinement;
use berth::store::MachineConfig;
use berth::systemd::properties::limit_values;
use berth_fuzz::text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let Ok(config) = toml::from_str::<MachineConfig>(&input) else {
        return;
    };
    let written = match toml::to_string(&config) {
        Ok(written) => written,
        Err(e) => panic!("a config that was read cannot be written: {e}\n{config:?}"),
    };
    let read = match toml::from_str::<MachineConfig>(&written) {
        Ok(read) => read,
        Err(e) => panic!("a config berth wrote cannot be read: {e}\n{written}"),
    };
    assert_eq!(read, config, "the config changed through TOML:\n{written}");
    assert_eq!(
        toml::to_string(&read).unwrap(),
        written,
        "writing it again changes it"
    );

    for flavor in [Flavor::Legacy, Flavor::Unified] {
        match limit_values(&config.limits, flavor) {
            Ok(_) => {}
            Err(LimitError::NotSupported(_))
                if flavor == Flavor::Legacy && config.limits.get("AllowedCPUs").is_some() => {}
            Err(e) => panic!("{flavor:?}: {e:?}"),
        }
    }
    let _ = Confinement::new(&config.security);
});
