//! `berthctl clone`, `snapshot`, `snapshots`, `restore`, `snapshot-remove`.

use std::collections::HashMap;

use serde_json::json;
use zbus::zvariant::{OwnedObjectPath, Value};

use super::args::{CloneArgs, RestoreArgs, SnapshotArgs, SnapshotRefArgs};
use super::commands::{Session, print, print_json};
use super::error::CliError;
use super::output;

impl Session {
    pub async fn clone_machine(&self, args: &CloneArgs) -> Result<i32, CliError> {
        let mut options: HashMap<&str, Value<'_>> = HashMap::new();
        if args.ephemeral {
            options.insert("Ephemeral", Value::Bool(true));
        }
        let manager = self.manager().await?;
        let body = (args.source.as_str(), args.name.as_str(), options);
        let path: OwnedObjectPath = self.change(manager.inner(), "CloneMachine", &body).await?;
        if self.json {
            print_json(&json!({ "name": args.name, "path": path.as_str() }))?;
        } else {
            print(&format!("{}\n", args.name))?;
        }
        Ok(0)
    }

    pub async fn snapshot(&self, args: &SnapshotArgs) -> Result<i32, CliError> {
        let m = self.machine(&args.machine).await?;
        let body = (args.snapshot.as_str(), args.comment.as_str());
        let () = self.change(m.inner(), "Snapshot", &body).await?;
        Ok(0)
    }

    pub async fn snapshots(&self, machine: &str) -> Result<i32, CliError> {
        let list = self.machine(machine).await?.list_snapshots().await?;
        if self.json {
            let array: Vec<_> = list
                .iter()
                .map(|(name, created, comment)| {
                    json!({ "name": name, "created_at_usec": created, "comment": comment })
                })
                .collect();
            return print_json(&serde_json::Value::Array(array)).map(|()| 0);
        }
        if list.is_empty() {
            return print(&format!("No snapshots of {machine}.\n")).map(|()| 0);
        }
        let rows: Vec<Vec<String>> = list
            .into_iter()
            .map(|(name, created, comment)| vec![name, output::timestamp_usec(created), comment])
            .collect();
        print(&output::table(&["NAME", "CREATED", "COMMENT"], &rows))?;
        Ok(0)
    }

    pub async fn restore(&self, args: &RestoreArgs) -> Result<i32, CliError> {
        let m = self.machine(&args.machine).await?;
        let new = args.new_machine.as_deref().unwrap_or("");
        let () = self
            .change(m.inner(), "RestoreSnapshot", &(args.snapshot.as_str(), new))
            .await?;
        Ok(0)
    }

    pub async fn snapshot_remove(&self, args: &SnapshotRefArgs) -> Result<i32, CliError> {
        let m = self.machine(&args.machine).await?;
        let () = self
            .change(m.inner(), "RemoveSnapshot", &(args.snapshot.as_str(),))
            .await?;
        Ok(0)
    }
}
