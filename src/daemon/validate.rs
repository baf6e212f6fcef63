//! What a command and its environment must be to ever run, checked where they enter:
//! CreateMachine (PID 1's Command and Environment), RunMachine (its command) and
//! Execute (argv and environment) call [`command`] before anything is made or started,
//! so a value that could never exec is refused with InvalidArgument naming it, not left
//! to fail inside the machine.

use crate::error::{Error, Result};
use crate::names::{shown, shown_bare};
use crate::spawn::protocol::{env_name, merge_environment};

/// The longest single argument or environment entry the kernel copies into a new
/// program, its NUL included: MAX_ARG_STRLEN, 32 pages of 4 KiB.
pub const MAX_ARG_STRLEN: usize = 128 << 10;

/// What argv and the environment may take together. execve(2) allows a quarter of the
/// stack limit (8 MiB by default, as systemd sets it for berthd) for the strings and
/// their pointers: 2 MiB. A machine never gets more, so a bigger request cannot run.
pub const MAX_EXEC_BYTES: usize = 2 << 20;

/// Kept free of [`MAX_EXEC_BYTES`] for the program's file name, which the kernel copies
/// beside argv and the environment (at most PATH_MAX).
const FILE_NAME_RESERVE: usize = libc::PATH_MAX as usize;

/// How each list is called where it came from: ("Command", "Environment") for
/// CreateMachine's options, ("argv", "environment") for Execute's arguments.
#[derive(Clone, Copy)]
pub struct Names {
    pub argv: &'static str,
    pub environment: &'static str,
}

pub const CREATE: Names = Names {
    argv: "Command",
    environment: "Environment",
};

/// RunMachine: its command is an argument, its environment an option.
pub const RUN: Names = Names {
    argv: "command",
    environment: "Environment",
};

pub const EXECUTE: Names = Names {
    argv: "argv",
    environment: "environment",
};

/// Checks that `argv` with `environment` (KEY=VALUE entries added to berth's base
/// environment) can be exec'ed: a program is named, every entry is NAME=VALUE with a
/// name POSIX and systemd accept, and the whole fits what execve takes.
pub fn command(names: Names, argv: &[String], environment: &[String]) -> Result<()> {
    match argv.first() {
        None => {
            return Err(Error::InvalidArgument(format!(
                "{} is empty: no command to run",
                names.argv
            )));
        }
        // Later arguments may be empty (sh -c ''); the program may not.
        Some(program) if program.is_empty() => {
            return Err(Error::InvalidArgument(format!(
                "{}[0] is empty: no command to run (it is the program)",
                names.argv
            )));
        }
        Some(_) => {}
    }
    for entry in environment {
        environment_entry(names.environment, entry)?;
    }
    let merged = merge_environment(environment);
    let mut total = FILE_NAME_RESERVE;
    let lists = [(names.argv, argv), (names.environment, merged.as_slice())];
    for (what, list) in lists {
        for (i, s) in list.iter().enumerate() {
            // The kernel counts the NUL too.
            if s.len() + 1 > MAX_ARG_STRLEN {
                let which = if what == names.argv {
                    format!("{what}[{i}]")
                } else {
                    let name = s.split('=').next().unwrap_or_default();
                    format!("{what} entry {}", shown_bare(name))
                };
                return Err(Error::InvalidArgument(format!(
                    "{which} is {} bytes; an argument or environment entry can be at most {} bytes (MAX_ARG_STRLEN), so it could never run",
                    s.len(),
                    MAX_ARG_STRLEN - 1
                )));
            }
            total += s.len() + 1 + std::mem::size_of::<usize>();
        }
    }
    if total > MAX_EXEC_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{} and {} come to {total} bytes with their pointers and berth's base environment; \
             a program can be given at most {MAX_EXEC_BYTES} (a quarter of the 8 MiB stack limit, ARG_MAX), so it could never run",
            names.argv, names.environment
        )));
    }
    Ok(())
}

fn environment_entry(what: &str, entry: &str) -> Result<()> {
    let Some((name, _)) = entry.split_once('=') else {
        return Err(Error::InvalidArgument(format!(
            "{what} entry {} is not NAME=VALUE",
            shown(entry)
        )));
    };
    env_name(name)
        .map_err(|e| Error::InvalidArgument(format!("{what} entry {}: {e}", shown(entry))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn refused(names: Names, argv: &[String], env: &[String]) -> String {
        let e = command(names, argv, env).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
        e.to_string()
    }

    #[test]
    fn environment_names_posix_and_systemd_refuse_are_refused() {
        let argv = strings(&["/bin/true"]);
        for (entry, says) in [
            ("1=2", "starts with a digit"),
            ("A B=1", "letters, digits and underscores"),
            ("=x", "empty"),
            ("A", "not NAME=VALUE"),
            ("A-B=1", "letters, digits and underscores"),
            ("Ä=1", "letters, digits and underscores"),
        ] {
            let got = refused(EXECUTE, &argv, &strings(&[entry]));
            assert!(got.starts_with("environment entry "), "{got}");
            assert!(got.contains(&format!("{entry:?}")), "{got}");
            assert!(got.contains(says), "{entry}: {got}");
            let got = refused(CREATE, &argv, &strings(&[entry]));
            assert!(got.starts_with("Environment entry "), "{got}");
        }
        for good in ["A=", "_x9=1", "PATH=/bin", "a=b=c", "X= spaces are fine "] {
            command(EXECUTE, &argv, &strings(&[good])).unwrap();
        }
    }

    #[test]
    fn a_command_names_a_program() {
        assert!(refused(EXECUTE, &[], &[]).contains("argv is empty: no command"));
        assert!(refused(CREATE, &strings(&["", "x"]), &[]).contains("Command[0] is empty"));
        // Empty arguments after the program are ordinary (sh -c '').
        command(CREATE, &strings(&["/bin/sh", "-c", ""]), &[]).unwrap();
    }

    #[test]
    fn what_could_never_exec_is_refused() {
        let argv = |list: Vec<String>| [vec!["/bin/echo".to_string()], list].concat();
        // One string at the kernel's limit, NUL included, is too long; one byte less fits.
        let long = "a".repeat(MAX_ARG_STRLEN);
        let got = refused(EXECUTE, &argv(vec![long.clone()]), &[]);
        assert!(
            got.contains("argv[1]") && got.contains("MAX_ARG_STRLEN"),
            "{got}"
        );
        command(EXECUTE, &argv(vec!["a".repeat(MAX_ARG_STRLEN - 1)]), &[]).unwrap();
        let got = refused(CREATE, &argv(vec![]), &[format!("A={long}")]);
        assert!(got.contains("Environment entry A is"), "{got}");

        // Many strings each short enough, too many together.
        let piece = "a".repeat(100 << 10);
        let got = refused(EXECUTE, &argv(vec![piece.clone(); 21]), &[]);
        assert!(
            got.contains("ARG_MAX") && got.contains("argv and environment"),
            "{got}"
        );
        let env: Vec<String> = (0..21).map(|i| format!("V{i}={piece}")).collect();
        let got = refused(CREATE, &argv(vec![]), &env);
        assert!(got.contains("Command and Environment"), "{got}");
        // Pointers count too: a million empty arguments are 8 MiB of them.
        let got = refused(EXECUTE, &argv(vec![String::new(); 1 << 20]), &[]);
        assert!(got.contains("ARG_MAX"), "{got}");
        command(EXECUTE, &argv(vec![piece; 19]), &[]).unwrap();
    }
}
