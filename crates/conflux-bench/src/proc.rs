//! A child process of a scenario (a baseline forwarder, a server), killed and
//! reaped on drop.

use std::process::{Child, Command, Stdio};

/// A child process, killed and reaped on drop.
pub(crate) struct Proc {
    child: Child,
    pub(crate) what: &'static str,
}

impl Proc {
    /// Starts `cmd` (stdin and stdout null; stderr as the caller set it).
    pub(crate) fn spawn(what: &'static str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc { child, what }
    }

    /// Panics if the process has exited.
    pub(crate) fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited: {status}", self.what);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
