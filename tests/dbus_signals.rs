//! What a frontend relies on, seen from a D-Bus client outside the host (berth's own
//! proxies): MachineNew/MachineRemoved, ObjectManager, a PropertiesChanged for every
//! State change, and the org.berth.Berth1.Error name of each kind of refusal.

mod common;

use berth::client::{MachineProxy, ManagerProxy};
use common::{CgroupMode, boot_with_berth};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

/// The next item of `stream`, awaited for at most 20 s. Not `common::wait_until`: this
/// waits for a signal to arrive on a stream, inside the runtime, rather than polling a
/// condition (a blocking poll would stall the connection it waits on).
async fn next_within<S: futures_util::Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("signal within 20 s")
        .expect("stream open")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A connection to the test host's system bus, as a client there has.
async fn connect(host: &common::TestHost) -> zbus::Connection {
    zbus::connection::Builder::address(host.bus_address().as_str())
        .unwrap()
        .build()
        .await
        .expect("connect to the host's system bus")
}

#[test]
fn state_changes_and_lifecycle_are_signalled() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "signals") else {
        return;
    };
    // Activate berthd first so the client sees a running service.
    host.okw("berthctl list");
    let rt = runtime();
    rt.block_on(async {
        let conn = connect(&host).await;
        let manager = ManagerProxy::new(&conn).await.unwrap();
        let objects = zbus::fdo::ObjectManagerProxy::builder(&conn)
            .destination(berth::api::BUS_NAME)
            .unwrap()
            .path(berth::api::ROOT_PATH)
            .unwrap()
            .build()
            .await
            .unwrap();
        let mut added = objects.receive_interfaces_added().await.unwrap();
        let mut new = manager.receive_machine_new().await.unwrap();
        let path = manager
            .create_machine("sig", "busybox", HashMap::new())
            .await
            .expect("CreateMachine");
        let announced = next_within(&mut new).await;
        assert_eq!(announced.args().unwrap().name, "sig");
        // The busybox template, built on first use, is announced before the machine.
        let template = next_within(&mut added).await;
        assert_eq!(
            template.args().unwrap().object_path.as_str(),
            "/org/berth/Berth1/template/busybox"
        );
        let added = next_within(&mut added).await;
        assert_eq!(added.args().unwrap().object_path.as_str(), path.as_str());

        let machine = MachineProxy::builder(&conn)
            .path(path.clone())
            .unwrap()
            .build()
            .await
            .unwrap();
        assert_eq!(machine.state().await.unwrap(), "stopped");
        // Raw signals: a caching proxy would fold quick changes into the last value.
        let props = zbus::fdo::PropertiesProxy::builder(&conn)
            .destination(berth::api::BUS_NAME)
            .unwrap()
            .path(path.clone())
            .unwrap()
            .build()
            .await
            .unwrap();
        let mut changes = props.receive_properties_changed().await.unwrap();
        let mut next_state = async || loop {
            let signal = next_within(&mut changes).await;
            let args = signal.args().unwrap();
            if let Some(v) = args.changed_properties.get("State") {
                return String::try_from(v.try_clone().unwrap()).unwrap();
            }
        };
        machine.start().await.expect("Start");
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some("running") {
            seen.push(next_state().await);
        }
        assert_eq!(seen, ["starting", "running"]);
        assert!(machine.leader().await.unwrap() > 1);

        machine.stop().await.expect("Stop");
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some("stopped") {
            seen.push(next_state().await);
        }
        assert_eq!(seen, ["stopping", "stopped"]);
        assert_eq!(machine.leader().await.unwrap(), 0);

        // Every refusal carries its org.berth.Berth1.Error name.
        let error_name = |r: zbus::Result<zbus::zvariant::OwnedObjectPath>| match r {
            Err(zbus::Error::MethodError(name, Some(msg), _)) => {
                assert!(!msg.is_empty());
                name.as_str().to_string()
            }
            other => panic!("expected a D-Bus error, got {other:?}"),
        };
        let opts = |k: &'static str, v: zbus::zvariant::Value<'static>| HashMap::from([(k, v)]);
        let cases = [
            ("a..b", "busybox", HashMap::new(), "InvalidName"),
            ("ok", "nope", HashMap::new(), "NoSuchTemplate"),
            ("sig", "busybox", HashMap::new(), "AlreadyExists"),
            (
                "ok",
                "busybox",
                opts("MemoryMax", "64Q".into()),
                "InvalidArgument",
            ),
            (
                "ok",
                "busybox",
                opts("TasksMax", 0u64.into()),
                "InvalidArgument",
            ),
            (
                "ok",
                "busybox",
                opts("CPUShares", (-5i64).into()),
                "InvalidArgument",
            ),
            (
                "ok",
                "busybox",
                opts("AllowedCPUs", "0".into()),
                "NotSupported",
            ),
            (
                "ok",
                "busybox",
                opts("Bogus", true.into()),
                "InvalidArgument",
            ),
        ];
        for (name, template, options, want) in cases {
            let got = error_name(manager.create_machine(name, template, options).await);
            assert_eq!(
                got,
                format!("org.berth.Berth1.Error.{want}"),
                "{name} {template}"
            );
        }
        machine.start().await.unwrap();
        match machine.start().await {
            Err(zbus::Error::MethodError(name, _, _)) => {
                assert_eq!(name.as_str(), "org.berth.Berth1.Error.InvalidState")
            }
            other => panic!("{other:?}"),
        }
        machine.stop().await.unwrap();
        let listed = manager.list_machines().await.unwrap();
        assert_eq!(
            listed.len(),
            1,
            "refused creations left nothing: {listed:?}"
        );

        let mut removed = manager.receive_machine_removed().await.unwrap();
        machine.remove().await.expect("Remove");
        assert_eq!(next_within(&mut removed).await.args().unwrap().name, "sig");
        let err = manager.get_machine("sig").await.unwrap_err();
        match err {
            zbus::Error::MethodError(name, _, _) => {
                assert_eq!(name.as_str(), "org.berth.Berth1.Error.NoSuchMachine")
            }
            other => panic!("{other:?}"),
        }
    });
}

/// The D-Bus error name of a failed call, with its message.
fn refusal<T: std::fmt::Debug>(r: zbus::Result<T>) -> (String, String) {
    match r {
        Err(zbus::Error::MethodError(name, msg, _)) => {
            (name.as_str().to_string(), msg.unwrap_or_default())
        }
        other => panic!("expected a D-Bus error, got {other:?}"),
    }
}

#[test]
fn input_that_could_never_run_is_refused_where_it_enters() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "input_checked") else {
        return;
    };
    host.okw("berthctl list");
    let rt = runtime();
    rt.block_on(async {
        use std::os::fd::AsFd;
        use zbus::zvariant::Value;
        let conn = connect(&host).await;
        let manager = ManagerProxy::new(&conn).await.unwrap();
        let invalid = "org.berth.Berth1.Error.InvalidArgument";
        let piece = "a".repeat(100 << 10);
        let too_big: Vec<String> = (0..24).map(|i| format!("V{i}={piece}")).collect();
        let cases: Vec<(&str, Value<'static>, &str)> = vec![
            ("Environment", vec!["1=2"].into(), "starts with a digit"),
            ("Environment", vec!["A B=1"].into(), "\"A B=1\""),
            ("Environment", vec!["=x"].into(), "empty"),
            ("Environment", vec!["A"].into(), "not NAME=VALUE"),
            ("Command", vec!["", "x"].into(), "Command[0] is empty"),
            ("Environment", too_big.clone().into(), "ARG_MAX"),
            (
                "Command",
                vec!["/bin/echo".to_string(), "a".repeat(200 << 10)].into(),
                "MAX_ARG_STRLEN",
            ),
        ];
        for (key, value, says) in cases {
            let (name, msg) = refusal(
                manager
                    .create_machine("bad", "busybox", HashMap::from([(key, value)]))
                    .await,
            );
            assert_eq!(name, invalid, "{key}: {msg}");
            assert!(msg.contains(says), "{key}: {msg:?} lacks {says:?}");
        }
        assert!(manager.list_machines().await.unwrap().is_empty());

        // Execute: the same checks, the same error, before anything runs.
        let path = manager
            .create_machine("box", "busybox", HashMap::new())
            .await
            .unwrap();
        let machine = MachineProxy::builder(&conn)
            .path(path)
            .unwrap()
            .build()
            .await
            .unwrap();
        machine.start().await.unwrap();
        let null = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap();
        let execute = async |argv: &[&str], env: &[&str]| {
            let fd = || null.as_fd().into();
            machine.execute(argv, env, fd(), fd(), fd()).await
        };
        assert_eq!(execute(&["true"], &["A=1"]).await.unwrap(), 0);
        let many: Vec<&str> = std::iter::once("/bin/true")
            .chain(std::iter::repeat_n(piece.as_str(), 24))
            .collect();
        let too_big: Vec<&str> = too_big.iter().map(String::as_str).collect();
        for (argv, env, says) in [
            (&["true"][..], &["1=2"][..], "environment entry \"1=2\""),
            (&["true"][..], &["A B=1"][..], "environment entry \"A B=1\""),
            (&["true"][..], &["=x"][..], "empty"),
            (&["true"][..], &["A"][..], "not NAME=VALUE"),
            (&[""][..], &[][..], "no command"),
            (&many[..], &[][..], "argv and environment come to"),
            (&["true"][..], &too_big[..], "ARG_MAX"),
        ] {
            let (name, msg) = refusal(execute(argv, env).await);
            assert_eq!(name, invalid, "{msg}");
            assert!(msg.contains(says), "{msg:?} lacks {says:?}");
        }
        machine.stop().await.unwrap();
        machine.remove().await.unwrap();
    });
}

#[test]
fn of_two_removals_of_one_machine_the_second_finds_no_machine() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "remove_race") else {
        return;
    };
    host.okw("berthctl list");
    let rt = runtime();
    rt.block_on(async {
        use zbus::zvariant::Value;
        let conn = connect(&host).await;
        let manager = ManagerProxy::new(&conn).await.unwrap();
        // A PID 1 that ignores its halt signal holds the first removal in its stop for
        // the whole timeout, so the second call surely reaches the machine's object:
        // sleep itself as PID 1 (berth's init would pass the signal on to it).
        let options = HashMap::from([
            ("Command", Value::from(vec!["/bin/sleep", "1000"])),
            ("Init", Value::Bool(false)),
            ("StopTimeoutUSec", Value::U64(2_000_000)),
        ]);
        let path = manager
            .create_machine("race", "busybox", options)
            .await
            .unwrap();
        let machine = MachineProxy::builder(&conn)
            .path(path)
            .unwrap()
            .build()
            .await
            .unwrap();
        machine.start().await.unwrap();
        let force = || HashMap::from([("Force", Value::Bool(true))]);
        let (first, second) = tokio::join!(machine.remove_with_options(force()), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            machine.remove_with_options(force()).await
        });
        first.expect("the first removal succeeds");
        let (name, msg) = refusal(second);
        assert_eq!(name, "org.berth.Berth1.Error.NoSuchMachine", "{msg}");
        assert!(msg.contains("no machine named \"race\""), "{msg}");
        assert!(manager.list_machines().await.unwrap().is_empty());
    });
    // And berthctl, asking after the removal, says the same.
    let out = host.runw("berthctl remove race");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no machine named \"race\""), "{out:?}");
}
