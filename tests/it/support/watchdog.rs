//! `Watchdog`: a tiny `sh` that kills a process (or process group) a test started, and
//! removes its temp dir, if the test process dies without cleaning up (a static never
//! dropped, Ctrl-C, SIGKILL). It blocks reading a pipe from us; EOF means we are gone.
//! Dropping the `Watchdog` stops it without it acting, so drop it before reaping the
//! process yourself: once reaped, its PID may be reused.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

pub struct Watchdog {
    shell: Child,
    /// Held open while we live; the OS closes it when we die, which wakes the shell.
    _pipe: ChildStdin,
}

impl Watchdog {
    /// `target` is a PID, or `-PGID` for a whole process group; `dir` is removed after.
    pub fn spawn(target: &str, dir: Option<&Path>) -> Watchdog {
        let mut script =
            format!("trap '' INT HUP TERM QUIT; read -r _; kill -KILL {target} 2>/dev/null");
        if let Some(dir) = dir {
            let dir = dir.display().to_string();
            assert!(
                !dir.contains('\''),
                "temp dir {dir:?} cannot be single-quoted"
            );
            script.push_str(&format!("; rm -rf '{dir}'"));
        }
        // Own process group and ignored signals, so the Ctrl-C that kills us spares it.
        // (dash's `kill` takes no `--`: `-PGID` after the signal is already the group.)
        let mut shell = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start a watchdog shell");
        let pipe = shell.stdin.take().expect("the watchdog's stdin is piped");
        Watchdog { shell, _pipe: pipe }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Killed before the pipe closes, so it never acts.
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}
