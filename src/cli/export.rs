//! `berthctl export` and `import`: the archive is opened here, with the caller's rights,
//! and berthd reads or writes only the descriptor.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use zbus::zvariant::{Fd, OwnedObjectPath, Value};

use super::args::{ExportArgs, ImportArgs};
use super::commands::{Session, print};
use super::error::CliError;

/// The format a file name asks for.
fn format_of(file: &Path) -> Option<&'static str> {
    let name = file.file_name()?.to_str()?;
    [
        (".tar.zst", "tar.zst"),
        (".tzst", "tar.zst"),
        (".tar.xz", "tar.xz"),
        (".txz", "tar.xz"),
        (".tar.gz", "tar.gz"),
        (".tgz", "tar.gz"),
        (".tar", "tar"),
    ]
    .into_iter()
    .find(|(ext, _)| name.ends_with(ext))
    .map(|(_, f)| f)
}

/// The archive at `file` (stdin for `-`), opened with the caller's rights for berthd to
/// read (import, the tar template method).
pub(super) fn open_archive(file: &Path) -> Result<OwnedFd, CliError> {
    if file.as_os_str() == "-" {
        return Ok(std::io::stdin().as_fd().try_clone_to_owned()?);
    }
    Ok(std::fs::File::open(file)
        .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", file.display())))?
        .into())
}

impl Session {
    pub async fn export(&self, args: &ExportArgs) -> Result<i32, CliError> {
        let to_stdout = args.file.as_os_str() == "-";
        let format = match (&args.format, to_stdout) {
            (Some(f), _) => f.clone(),
            (None, true) => "tar.zst".to_string(),
            (None, false) => format_of(&args.file)
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "cannot tell the format from {}; name it .tar, .tar.gz, .tar.xz or \
                         .tar.zst, or give --format",
                        args.file.display()
                    ))
                })?
                .to_string(),
        };
        if to_stdout && std::io::stdout().is_terminal() {
            return Err(CliError::Usage(
                "refusing to write an archive to a terminal; redirect stdout or name a file".into(),
            ));
        }
        let out: OwnedFd = if to_stdout {
            std::io::stdout().as_fd().try_clone_to_owned()?
        } else {
            std::fs::File::create(&args.file)
                .map_err(|e| {
                    CliError::Usage(format!("cannot create {}: {e}", args.file.display()))
                })?
                .into()
        };
        let result = self.export_to(args, &out, &format).await;
        if result.is_err() && !to_stdout {
            // Half an archive is worse than none.
            let _ = std::fs::remove_file(&args.file);
        }
        result
    }

    async fn export_to(
        &self,
        args: &ExportArgs,
        out: &OwnedFd,
        format: &str,
    ) -> Result<i32, CliError> {
        let machine = self.machine(&args.name).await?;
        let mut options: HashMap<&str, Value<'_>> = HashMap::new();
        if args.rootfs_only {
            options.insert("RootfsOnly", Value::Bool(true));
        }
        let signals = self.job_signals().await?;
        let body = (Fd::from(out.as_fd()), format, options);
        let job: OwnedObjectPath = self
            .change(machine.inner(), "ExportWithOptions", &body)
            .await?;
        self.follow(
            signals,
            job,
            &format!("exporting {}", args.name),
            &args.follow,
        )
        .await?;
        Ok(0)
    }

    pub async fn import(&self, args: &ImportArgs) -> Result<i32, CliError> {
        let input = open_archive(&args.file)?;
        let manager = self.manager().await?;
        let signals = self.job_signals().await?;
        let options: HashMap<&str, Value<'_>> = HashMap::new();
        let body = (args.name.as_str(), Fd::from(input.as_fd()), options);
        let job: OwnedObjectPath = self.change(manager.inner(), "ImportMachine", &body).await?;
        drop(input);
        self.follow(
            signals,
            job,
            &format!("importing {}", args.name),
            &args.follow,
        )
        .await?;
        if !self.json {
            print(&format!("{}\n", args.name))?;
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_file_names() {
        assert_eq!(format_of(Path::new("/x/web.tar.zst")), Some("tar.zst"));
        assert_eq!(format_of(Path::new("web.tgz")), Some("tar.gz"));
        assert_eq!(format_of(Path::new("web.tar")), Some("tar"));
        assert_eq!(format_of(Path::new("web.zip")), None);
    }
}
