//! Running external commands. Every command run for the user is echoed first,
//! streams its output straight to the terminal, and a failure names it.

use std::{
    ffi::OsStr,
    fmt,
    path::Path,
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// An external command; displays as the shell line that would run it.
pub(crate) struct Cmd(Command);

impl Cmd {
    pub(crate) fn new(program: impl AsRef<OsStr>) -> Self {
        Self(Command::new(program))
    }

    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.0.arg(arg);
        self
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.0.args(args);
        self
    }

    pub(crate) fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.0.env(key, value);
        self
    }

    pub(crate) fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.0.env_remove(key);
        self
    }

    pub(crate) fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.0.current_dir(dir);
        self
    }

    /// Echoes the command, runs it on the terminal, and fails unless it exits 0.
    pub(crate) fn run(mut self) -> Result<()> {
        eprintln!("$ {self}");
        let status = self
            .0
            .status()
            .with_context(|| format!("could not start `{self}`"))?;
        if !status.success() {
            bail!("`{self}` failed ({status})");
        }
        Ok(())
    }

    /// Runs the command quietly: its stdout when it exits 0, `None` when it
    /// exits otherwise, an error when it cannot be started at all.
    pub(crate) fn probe(mut self) -> Result<Option<String>> {
        let out = self.capture()?;
        if !out.status.success() {
            return Ok(None);
        }
        self.stdout(out).map(Some)
    }

    /// Runs the command quietly and returns its stdout; fails unless it
    /// exits 0, with its stderr in the error.
    pub(crate) fn read(mut self) -> Result<String> {
        let out = self.capture()?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            bail!("`{self}` failed ({}): {}", out.status, stderr.trim());
        }
        self.stdout(out)
    }

    fn capture(&mut self) -> Result<Output> {
        self.0
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not start `{self}`"))
    }

    fn stdout(&self, out: Output) -> Result<String> {
        String::from_utf8(out.stdout)
            .with_context(|| format!("`{self}` printed something that is not UTF-8"))
    }

    /// Runs the command quietly; true when it could be started and exited 0.
    pub(crate) fn succeeds(mut self) -> bool {
        self.0
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }
}

/// `VAR=value program arg...`, quoted so that it can be pasted into a shell.
/// Removed variables are not shown.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = Vec::new();
        for (key, value) in self.0.get_envs() {
            if let Some(value) = value {
                words.push(format!(
                    "{}={}",
                    key.to_string_lossy(),
                    shell_quote(&value.to_string_lossy())
                ));
            }
        }
        words.push(shell_quote(&self.0.get_program().to_string_lossy()));
        for arg in self.0.get_args() {
            words.push(shell_quote(&arg.to_string_lossy()));
        }
        f.write_str(&words.join(" "))
    }
}

fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:+,@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_env_program_and_quoted_args() {
        let cmd = Cmd::new("dpkg-query")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env_remove("RUSTC")
            .args(["-W", "-f", "${Status}", "it's", ""]);
        assert_eq!(
            cmd.to_string(),
            r"DEBIAN_FRONTEND=noninteractive dpkg-query -W -f '${Status}' 'it'\''s' ''"
        );
    }

    #[test]
    fn failure_names_the_command() {
        let err = Cmd::new("false").arg("--flag").run().unwrap_err();
        assert!(err.to_string().contains("`false --flag` failed"), "{err}");
        let err = Cmd::new("sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .read()
            .unwrap_err();
        assert!(err.to_string().contains("oops"), "{err}");
        let err = Cmd::new("/nonexistent/tool").run().unwrap_err();
        assert!(err.to_string().contains("`/nonexistent/tool`"), "{err}");
    }
}
