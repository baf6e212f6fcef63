//! `berthctl template build|list|remove`.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

use serde_json::json;
use zbus::zvariant::{Fd, OwnedObjectPath, OwnedValue, Value};

use super::args::TemplateBuildArgs;
use super::commands::{Session, print, print_json};
use super::error::CliError;
use super::output;
use crate::api::{ROOT_PATH, TEMPLATE_INTERFACE};
use crate::client::TemplateProxy;

impl Session {
    pub async fn template_build(&self, args: &TemplateBuildArgs) -> Result<i32, CliError> {
        let mut options: HashMap<&str, Value<'_>> = HashMap::new();
        let text = [
            ("Suite", &args.suite),
            ("Mirror", &args.mirror),
            ("Variant", &args.variant),
            ("Architecture", &args.arch),
        ];
        for (key, value) in text {
            if let Some(v) = value {
                options.insert(key, Value::from(v.as_str()));
            }
        }
        if !args.include.is_empty() {
            options.insert("Include", Value::from(args.include.clone()));
        }
        // berthd never opens a caller's path: the archive is opened here, with the
        // caller's rights, and passed as a descriptor.
        let archive: Option<OwnedFd> = args
            .file
            .as_deref()
            .map(super::export::open_archive)
            .transpose()?;
        if let Some(fd) = &archive {
            options.insert("Archive", Value::Fd(Fd::from(fd.as_fd())));
        }
        if let Some(source) = &args.source {
            let abs = std::path::absolute(source)?;
            options.insert("Source", Value::from(abs.to_string_lossy().into_owned()));
        }
        let signals = self.job_signals().await?;
        let manager = self.manager().await?;
        let body = (args.name.as_str(), args.method.as_str(), options);
        let job: OwnedObjectPath = self.change(manager.inner(), "BuildTemplate", &body).await?;
        drop(archive);
        self.follow(
            signals,
            job,
            &format!("building {}", args.name),
            &args.follow,
        )
        .await?;
        if self.json {
            print_json(&json!({ "name": args.name }))?;
        } else {
            print(&format!("{}\n", args.name))?;
        }
        Ok(0)
    }

    pub async fn template_list(&self) -> Result<i32, CliError> {
        // One call for all of them, whatever their number.
        let objects = zbus::fdo::ObjectManagerProxy::builder(&self.conn)
            .destination(crate::client::SERVICE)?
            .path(ROOT_PATH)?
            .build()
            .await?
            .get_managed_objects()
            .await
            .map_err(zbus::Error::from)?;
        let mut rows: Vec<HashMap<String, OwnedValue>> = objects
            .into_values()
            .filter_map(|mut ifaces| {
                ifaces
                    .remove(TEMPLATE_INTERFACE)
                    .map(|props| props.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            })
            .collect();
        let text = |p: &HashMap<String, OwnedValue>, k: &str| {
            p.get(k)
                .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
                .unwrap_or_default()
        };
        let number = |p: &HashMap<String, OwnedValue>, k: &str| {
            p.get(k).and_then(|v| output::as_u64(v)).unwrap_or(0)
        };
        rows.sort_by_key(|p| text(p, "Name"));
        if self.json {
            let array: Vec<_> = rows
                .iter()
                .map(|p| {
                    json!({
                        "name": text(p, "Name"),
                        "method": text(p, "Method"),
                        "state": text(p, "State"),
                        "size_bytes": number(p, "SizeBytes"),
                        "created_at_usec": number(p, "CreatedAt"),
                        "problem": text(p, "Problem"),
                    })
                })
                .collect();
            return print_json(&serde_json::Value::Array(array)).map(|()| 0);
        }
        if rows.is_empty() {
            return print("No templates. berthctl template build makes one.\n").map(|()| 0);
        }
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|p| {
                let created = number(p, "CreatedAt");
                vec![
                    text(p, "Name"),
                    text(p, "Method"),
                    text(p, "State"),
                    match number(p, "SizeBytes") {
                        0 => "-".into(),
                        n => output::size_human(n),
                    },
                    if created == 0 {
                        "-".into()
                    } else {
                        output::timestamp_usec(created)
                    },
                ]
            })
            .collect();
        print(&output::table(
            &["NAME", "METHOD", "STATE", "SIZE", "CREATED"],
            &cells,
        ))?;
        Ok(0)
    }

    pub async fn template_remove(&self, name: &str) -> Result<i32, CliError> {
        let path = self
            .manager()
            .await?
            .list_templates()
            .await?
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, p)| p)
            .ok_or_else(|| {
                CliError::DBus(format!(
                    "no template named {}; berthctl template list shows them",
                    crate::names::shown(name)
                ))
            })?;
        let proxy = TemplateProxy::builder(&self.conn)
            .path(path)?
            .build()
            .await?;
        let () = self.change(proxy.inner(), "Remove", &()).await?;
        Ok(0)
    }
}
