//! `berthctl shell`: OpenShell, this terminal relayed to the pty berthd returns
//! (terminal.rs), and the shell's exit status from its ShellExited signal.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use zbus::message::{Flags, Type};
use zbus::zvariant::OwnedObjectPath;
use zbus::{MatchRule, Message, MessageStream};

use super::args::ShellArgs;
use super::commands::Session;
use super::error::CliError;
use super::parse::KeyValue;
use super::terminal;
use crate::client::{MACHINE_INTERFACE, SERVICE};

/// How long after the pty hung up berthd may take to say how the shell ended: it has
/// only to reap its helper.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(30);

type Opened = Result<(zbus::zvariant::OwnedFd, String), CliError>;

impl Session {
    pub async fn shell(&self, args: &ShellArgs) -> Result<i32, CliError> {
        let machine = self.machine(&args.name).await?;
        let path = OwnedObjectPath::from(machine.inner().path().to_owned());
        let mut env: Vec<String> = args.env.iter().map(KeyValue::joined).collect();
        // The shell draws for the terminal we relay to, so it should know its kind.
        if !env.iter().any(|e| e.starts_with("TERM="))
            && let Ok(term) = std::env::var("TERM")
            && !term.is_empty()
        {
            env.push(format!("TERM={term}"));
        }

        // ShellExited is subscribed to before the call: a quick command may end before
        // its reply is read. Replies and signals are read from one stream, in the order
        // berthd sent them: it sends a shell's ShellExited only after the reply, so a
        // signal for the same pty path seen before the reply is an earlier shell's.
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(SERVICE)?
            .path(path.clone())?
            .interface(MACHINE_INTERFACE)?
            .member("ShellExited")?
            .build();
        zbus::fdo::DBusProxy::new(&self.conn)
            .await?
            .add_match_rule(rule)
            .await
            .map_err(zbus::Error::from)?;
        let stream = MessageStream::from(&self.conn);
        let mut call = Message::method_call(path.clone(), "OpenShell")?
            .destination(SERVICE)?
            .interface(MACHINE_INTERFACE)?;
        if self.interactive {
            call = call.with_flags(Flags::AllowInteractiveAuth)?;
        }
        let argv: Vec<&str> = args.command.iter().map(String::as_str).collect();
        let call = call.build(&(args.user.as_str(), argv, env))?;
        let (opened_tx, opened_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        let watcher = tokio::spawn(watch(
            stream,
            path.clone(),
            call.primary_header().serial_num().get(),
            opened_tx,
            exited_tx,
        ));
        self.conn.send(&call).await?;
        let opened = opened_rx
            .await
            .unwrap_or_else(|_| Err(CliError::DBus("lost berthd before its reply".into())));
        let (master, _pty_path) = match opened {
            Ok(o) => o,
            Err(e) => {
                watcher.abort();
                return Err(e);
            }
        };
        terminal::relay(master.into(), None).await?;
        match tokio::time::timeout(EXIT_STATUS_WAIT, exited_rx).await {
            Ok(Ok(status)) => Ok(status),
            _ => Err(CliError::DBus(format!(
                "the shell's terminal closed, but berthd did not say how the shell in {} ended",
                args.name
            ))),
        }
    }
}

/// Reads every message of the connection (keeping it drained: zbus holds back its
/// socket while a stream is full): first the reply to the call with serial `call`, then
/// the ShellExited for the pty that reply names, from `machine`'s object.
async fn watch(
    mut stream: MessageStream,
    machine: OwnedObjectPath,
    call: u32,
    opened: oneshot::Sender<Opened>,
    exited: oneshot::Sender<i32>,
) {
    let mut opened = Some(opened);
    let mut ours: Option<String> = None;
    while let Some(Ok(msg)) = stream.next().await {
        let hdr = msg.header();
        match msg.message_type() {
            Type::MethodReturn | Type::Error
                if hdr.reply_serial().map(|s| s.get()) == Some(call) =>
            {
                let reply: Opened = match msg.message_type() {
                    Type::Error => Err(zbus::Error::from(msg.clone()).into()),
                    _ => msg.body().deserialize().map_err(CliError::from),
                };
                ours = reply.as_ref().ok().map(|(_, p)| p.clone());
                let failed = reply.is_err();
                if let Some(tx) = opened.take() {
                    let _ = tx.send(reply);
                }
                if failed {
                    return;
                }
            }
            Type::Signal
                if hdr.member().is_some_and(|m| m.as_str() == "ShellExited")
                    && hdr.path().is_some_and(|p| p.as_str() == machine.as_str()) =>
            {
                let Some(ours) = &ours else {
                    continue;
                };
                if let Ok((pty, status)) = msg.body().deserialize::<(String, i32)>()
                    && &pty == ours
                {
                    let _ = exited.send(status);
                    return;
                }
            }
            _ => {}
        }
    }
}
