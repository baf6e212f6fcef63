//! One async function per verb, each talking to berthd over one connection.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use serde_json::json;
use zbus::names::InterfaceName;
use zbus::proxy::{CacheProperties, MethodFlags};
use zbus::zvariant::{DynamicDeserialize, DynamicType, Fd, OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, fdo};

use super::args::{CreateArgs, ExecArgs, KillArgs, RemoveArgs, SetArgs};
use super::error::{CliError, error_name};
use super::output;
use super::parse::{KeyValue, create_options, limits_dict, network_dict};
use crate::client::{MACHINE_INTERFACE, MachineProxy, ManagerProxy, SERVICE};

/// The most calls a verb that asks something of each of many objects keeps in flight:
/// the bus allows a connection 128 pending replies, and a few at a time already keep
/// berthd busy.
pub(super) const FAN_OUT: usize = 8;

/// What `list` shows beyond a machine's name and path.
const LIST_PROPERTIES: [&str; 6] = [
    "State",
    "Leader",
    "Template",
    "Unit",
    "PrivateUsers",
    "Address",
];

pub struct Session {
    pub(super) conn: Connection,
    pub(super) json: bool,
    /// Someone is at a terminal who could type a password for polkit.
    pub(super) interactive: bool,
}

impl Session {
    pub async fn connect(address: Option<&str>, json: bool) -> Result<Self, CliError> {
        let conn = match address {
            None => Connection::system()
                .await
                .map_err(|e| CliError::SystemBus(connect_error(e)))?,
            Some(address) => {
                let fail = |e: zbus::Error| CliError::Bus {
                    address: address.to_owned(),
                    message: connect_error(e),
                };
                zbus::connection::Builder::address(address)
                    .map_err(fail)?
                    .build()
                    .await
                    .map_err(fail)?
            }
        };
        Ok(Session {
            conn,
            json,
            interactive: io::stdin().is_terminal(),
        })
    }

    // A one-shot command reads each property at most once, so caching would only add a
    // GetAll and a match rule per proxy.

    pub(super) async fn manager(&self) -> Result<ManagerProxy<'static>, CliError> {
        Ok(ManagerProxy::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?)
    }

    pub(super) async fn machine_at(
        &self,
        path: OwnedObjectPath,
    ) -> zbus::Result<MachineProxy<'static>> {
        MachineProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    pub(super) async fn machine(&self, name: &str) -> Result<MachineProxy<'static>, CliError> {
        let path = self.manager().await?.get_machine(name).await?;
        Ok(self.machine_at(path).await?)
    }

    /// Calls a method that changes something. For a caller who is not root berthd asks
    /// polkit, which may want a password: only worth waiting for when someone at a
    /// terminal can type it, so a script gets polkit's answer at once instead. zbus sets
    /// this flag per method in the proxy, not per call, hence the untyped call.
    pub(super) async fn change<B, R>(
        &self,
        proxy: &zbus::Proxy<'_>,
        method: &str,
        body: &B,
    ) -> Result<R, CliError>
    where
        B: serde::Serialize + DynamicType,
        R: for<'d> DynamicDeserialize<'d>,
    {
        Ok(self.change_raw(proxy, method, body).await?)
    }

    /// [`Session::change`] with the bus's error as it came, for a caller that tells
    /// some apart.
    async fn change_raw<B, R>(
        &self,
        proxy: &zbus::Proxy<'_>,
        method: &str,
        body: &B,
    ) -> zbus::Result<R>
    where
        B: serde::Serialize + DynamicType,
        R: for<'d> DynamicDeserialize<'d>,
    {
        let flags = if self.interactive {
            MethodFlags::AllowInteractiveAuth.into()
        } else {
            Default::default()
        };
        let reply = proxy.call_with_flags(method, flags, body).await?;
        Ok(reply.expect("a method call without NoReplyExpected has a reply"))
    }

    pub async fn create(&self, args: &CreateArgs) -> Result<i32, CliError> {
        let options = create_options(args)?;
        let manager = self.manager().await?;
        let body = (args.name.as_str(), args.template.as_str(), options);
        let path: OwnedObjectPath = self.change(manager.inner(), "CreateMachine", &body).await?;
        if self.json {
            print_json(&json!({ "name": args.name, "path": path.as_str() }))?;
        } else {
            print(&format!("{}\n", args.name))?;
        }
        Ok(0)
    }

    pub async fn start(&self, name: &str) -> Result<i32, CliError> {
        let () = self
            .change(self.machine(name).await?.inner(), "Start", &())
            .await?;
        Ok(0)
    }

    pub async fn stop(&self, name: &str) -> Result<i32, CliError> {
        let () = self
            .change(self.machine(name).await?.inner(), "Stop", &())
            .await?;
        Ok(0)
    }

    pub async fn rename(&self, name: &str, new_name: &str) -> Result<i32, CliError> {
        let () = self
            .change(self.machine(name).await?.inner(), "Rename", &(new_name,))
            .await?;
        Ok(0)
    }

    pub async fn freeze(&self, name: &str, freeze: bool) -> Result<i32, CliError> {
        let method = if freeze { "Freeze" } else { "Thaw" };
        let () = self
            .change(self.machine(name).await?.inner(), method, &())
            .await?;
        Ok(0)
    }

    pub async fn autostart(&self, name: &str, enabled: bool) -> Result<i32, CliError> {
        let machine = self.machine(name).await?;
        let () = self
            .change(machine.inner(), "SetAutostart", &(enabled,))
            .await?;
        Ok(0)
    }

    pub async fn restart(&self, name: &str) -> Result<i32, CliError> {
        let () = self
            .change(self.machine(name).await?.inner(), "Restart", &())
            .await?;
        Ok(0)
    }

    pub async fn kill(&self, args: &KillArgs) -> Result<i32, CliError> {
        let machine = self.machine(&args.name).await?;
        let body = (args.whom.as_str(), args.signal);
        let () = self.change(machine.inner(), "Kill", &body).await?;
        Ok(0)
    }

    pub async fn remove(&self, args: &RemoveArgs) -> Result<i32, CliError> {
        let machine = self.machine(&args.name).await?;
        if args.force {
            let options = HashMap::from([("Force", Value::Bool(true))]);
            let () = self
                .change(machine.inner(), "RemoveWithOptions", &(options,))
                .await?;
        } else {
            let () = self.change(machine.inner(), "Remove", &()).await?;
        }
        Ok(0)
    }

    pub async fn list(&self) -> Result<i32, CliError> {
        // One call whatever the number of machines: a Get per machine and property
        // would soon pass the bus's limit of pending replies.
        let machines = self
            .manager()
            .await?
            .list_machines_detailed(&[], &LIST_PROPERTIES)
            .await?;
        let mut rows: Vec<Row> = machines
            .into_iter()
            .map(|(name, path, props)| Row::new(name, path, &props))
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));

        if self.json {
            let array: Vec<_> = rows.iter().map(Row::to_json).collect();
            return print_json(&serde_json::Value::Array(array)).map(|()| 0);
        }
        if rows.is_empty() {
            return print("No machines.\n").map(|()| 0);
        }
        let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
        print(&output::table(&Row::HEADER, &cells))?;
        Ok(0)
    }

    /// One machine as its GetAll gives it; several (and a name not found among them
    /// does not hide the others) with one ListMachinesDetailed.
    pub async fn status(&self, names: &[String]) -> Result<i32, CliError> {
        let [name] = names else {
            return self.status_many(names).await;
        };
        let path = self.manager().await?.get_machine(name).await?;
        let properties = fdo::PropertiesProxy::builder(&self.conn)
            .destination(SERVICE)?
            .path(path)?
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let props: HashMap<String, OwnedValue> = properties
            .get_all(InterfaceName::from_static_str_unchecked(MACHINE_INTERFACE))
            .await
            .map_err(zbus::Error::from)?;
        if self.json {
            print_json(&output::status_json(&props))?;
        } else {
            print(&output::status_text(&props))?;
        }
        Ok(0)
    }

    async fn status_many(&self, names: &[String]) -> Result<i32, CliError> {
        let manager = self.manager().await?;
        let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut found: HashMap<String, HashMap<String, OwnedValue>> = manager
            .list_machines_detailed(&wanted, &[])
            .await?
            .into_iter()
            .map(|(name, _, props)| (name, props))
            .collect();
        let (mut shown, mut missing) = (Vec::new(), Vec::new());
        for name in names {
            match found.remove(name) {
                Some(props) => shown.push(props),
                None => missing.push(name),
            }
        }
        if self.json {
            let array = shown.iter().map(output::status_json).collect();
            print_json(&serde_json::Value::Array(array))?;
        } else {
            let texts: Vec<String> = shown.iter().map(output::status_text).collect();
            print(&texts.join("\n"))?;
        }
        // Each name not found is told as berthd tells it for one name; the last one
        // makes the exit status.
        let mut failure = None;
        for name in missing {
            if let Err(e) = manager.get_machine(name).await
                && let Some(earlier) = failure.replace(CliError::from(e))
            {
                eprintln!("berthctl: {earlier}");
            }
        }
        failure.map_or(Ok(0), Err)
    }

    pub async fn exec(&self, args: &ExecArgs) -> Result<i32, CliError> {
        // Straight to the machine's object, without GetMachine: a bus round trip less
        // on a path scripts take many times; a missing object is a missing machine.
        let path = crate::names::machine_object_path(&args.name);
        let machine = self
            .machine_at(OwnedObjectPath::try_from(path).map_err(zbus::Error::from)?)
            .await?;
        let argv: Vec<&str> = args.command.iter().map(String::as_str).collect();
        let env: Vec<String> = args.env.iter().map(KeyValue::joined).collect();
        let env: Vec<&str> = env.iter().map(String::as_str).collect();
        let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
        // Whatever we buffered must reach the fd before the command writes to it too.
        stdout.lock().flush()?;
        let body = (
            argv,
            env,
            stdio(stdin.as_fd(), false)?,
            stdio(stdout.as_fd(), true)?,
            stdio(stderr.as_fd(), true)?,
        );
        match self.change_raw(machine.inner(), "Execute", &body).await {
            Err(e)
                if super::error::error_name(&e).as_deref()
                    == Some("org.freedesktop.DBus.Error.UnknownObject") =>
            {
                Err(CliError::DBus(
                    crate::error::Error::NoSuchMachine(args.name.clone()).to_string(),
                ))
            }
            other => Ok(other?),
        }
    }

    /// Network flags go to SetNetwork, limit flags to SetLimits. The network goes
    /// first: it is refused for a running machine, and that refusal should come before
    /// any limit has changed.
    pub async fn set(&self, args: &SetArgs) -> Result<i32, CliError> {
        let limits = limits_dict(&args.limits)?;
        let machine = self.machine(&args.name).await?;
        if args.network.given() {
            let options = network_dict(&args.network);
            let () = self
                .change(machine.inner(), "SetNetwork", &(options,))
                .await?;
        }
        if args.has_limits() {
            let () = self
                .change(machine.inner(), "SetLimits", &(limits,))
                .await?;
        }
        if let Some(bytes) = args.disk_quota {
            let () = self
                .change(machine.inner(), "SetDiskQuota", &(bytes,))
                .await?;
        }
        Ok(0)
    }
}

/// Whether a machine in this state holds its lease in use: running, or frozen (its
/// processes and veth are still there).
fn has_address(state: &str) -> bool {
    matches!(state, "running" | "frozen")
}

struct Row {
    name: String,
    state: String,
    leader: u32,
    template: String,
    unit: String,
    unprivileged: bool,
    /// The address of a running bridged machine, without its prefix.
    ipv4: Option<String>,
    path: OwnedObjectPath,
}

/// A string property of ListMachinesDetailed's reply; empty when it is missing.
fn text(props: &HashMap<String, OwnedValue>, key: &str) -> String {
    match props.get(key).map(|v| &**v) {
        Some(Value::Str(s)) => s.as_str().to_owned(),
        _ => String::new(),
    }
}

impl Row {
    fn new(name: String, path: OwnedObjectPath, props: &HashMap<String, OwnedValue>) -> Row {
        let state = text(props, "State");
        // The cached Address rather than the live Addresses: it is the lease a running
        // bridged machine has, and empty for any other machine; only a running (or
        // frozen) one has it in use.
        let address = text(props, "Address");
        let ipv4 = (has_address(&state) && !address.is_empty()).then(|| output::ipv4(&address));
        Row {
            name,
            leader: props
                .get("Leader")
                .and_then(|v| output::as_u64(v))
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            template: text(props, "Template"),
            unit: text(props, "Unit"),
            unprivileged: text(props, "PrivateUsers") != "no",
            ipv4,
            path,
            state,
        }
    }

    const HEADER: [&'static str; 7] = [
        "NAME",
        "STATE",
        "LEADER",
        "TEMPLATE",
        "UNPRIVILEGED",
        "IPV4",
        "UNIT",
    ];

    fn cells(&self) -> Vec<String> {
        let or_dash = |s: &str| if s.is_empty() { "-" } else { s }.to_owned();
        vec![
            self.name.clone(),
            self.state.clone(),
            match self.leader {
                0 => "-".to_owned(),
                pid => pid.to_string(),
            },
            or_dash(&self.template),
            if self.unprivileged { "yes" } else { "no" }.to_owned(),
            self.ipv4.clone().unwrap_or_else(|| "-".to_owned()),
            or_dash(&self.unit),
        ]
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "name": self.name,
            "state": self.state,
            "leader": (self.leader != 0).then_some(self.leader),
            "template": self.template,
            "unit": self.unit,
            "unprivileged": self.unprivileged,
            "ipv4": self.ipv4,
            "path": self.path.as_str(),
        })
    }
}

/// One of our stdio fds for Execute. A closed one is replaced by /dev/null, since a
/// closed descriptor cannot be sent and the command should see EOF, not an error.
pub(super) fn stdio(fd: BorrowedFd<'_>, write: bool) -> Result<Fd<'_>, CliError> {
    // SAFETY: F_GETFD only inspects the descriptor table; it touches no memory.
    let open = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } != -1;
    if open {
        return Ok(Fd::from(fd));
    }
    let null = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?;
    Ok(Fd::from(OwnedFd::from(null)))
}

/// The cause of a failed connection without zbus repeating the address we already name.
fn connect_error(err: zbus::Error) -> String {
    match err {
        zbus::Error::Connection(io, _) => io.to_string(),
        zbus::Error::InputOutput(io) => io.to_string(),
        other => other.to_string(),
    }
}

pub(super) fn print(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

pub(super) fn print_json(value: &serde_json::Value) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    text.push('\n');
    print(&text)
}

/// Errors meaning the object is gone, which a listing treats as "skip it".
pub(super) fn is_vanished(err: &zbus::Error) -> bool {
    error_name(err).is_some_and(|name| {
        matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.UnknownObject"
                | "org.freedesktop.DBus.Error.UnknownInterface"
                | "org.berth.Berth1.Error.NoSuchMachine"
                | "org.berth.Berth1.Error.NoSuchNetwork"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, state: &str, ipv4: Option<&str>) -> Row {
        Row {
            name: name.into(),
            state: state.into(),
            leader: if state == "running" { 4242 } else { 0 },
            template: "deb".into(),
            unit: format!("machine-{name}.scope"),
            unprivileged: true,
            ipv4: ipv4.map(str::to_owned),
            path: OwnedObjectPath::try_from(format!("/org/berth/Berth1/machine/{name}")).unwrap(),
        }
    }

    #[test]
    fn list_has_an_ipv4_column() {
        let rows = [
            row("web", "running", Some("10.0.3.17")),
            row("tool", "stopped", None),
        ];
        let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
        assert_eq!(
            output::table(&Row::HEADER, &cells),
            "NAME  STATE    LEADER  TEMPLATE  UNPRIVILEGED  IPV4       UNIT\n\
             web   running  4242    deb       yes           10.0.3.17  machine-web.scope\n\
             tool  stopped  -       deb       yes           -          machine-tool.scope\n"
        );
        assert_eq!(rows[0].to_json()["ipv4"], "10.0.3.17");
        assert_eq!(rows[1].to_json()["ipv4"], serde_json::Value::Null);
    }

    #[test]
    fn a_row_comes_from_the_detailed_properties() {
        let props = |state: &str, leader: u32| {
            let owned = |v: Value<'static>| OwnedValue::try_from(v).unwrap();
            HashMap::from([
                ("State".to_owned(), owned(Value::from(state.to_owned()))),
                ("Leader".to_owned(), owned(Value::U32(leader))),
                ("Template".to_owned(), owned(Value::from("deb"))),
                ("Unit".to_owned(), owned(Value::from("machine-web.scope"))),
                ("PrivateUsers".to_owned(), owned(Value::from("no"))),
                ("Address".to_owned(), owned(Value::from("10.0.3.17/24"))),
            ])
        };
        let path = || OwnedObjectPath::try_from("/org/berth/Berth1/machine/web").unwrap();
        let running = Row::new("web".into(), path(), &props("running", 4242));
        assert_eq!(
            running.cells(),
            [
                "web",
                "running",
                "4242",
                "deb",
                "no",
                "10.0.3.17",
                "machine-web.scope"
            ]
        );
        // A stopped machine keeps its lease in its config but has no address in use.
        let stopped = Row::new("web".into(), path(), &props("stopped", 0));
        assert_eq!(stopped.to_json()["ipv4"], serde_json::Value::Null);
        assert_eq!(stopped.to_json()["leader"], serde_json::Value::Null);
    }

    #[test]
    fn only_a_live_machine_has_an_address_in_use() {
        assert!(has_address("running") && has_address("frozen"));
        assert!(!has_address("stopped") && !has_address("starting") && !has_address("failed"));
    }
}
