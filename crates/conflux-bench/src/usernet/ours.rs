//! Our side: [`conflux_usernet::Usernet::spawn_netns`] on a namespace path,
//! configured (`--configure`: address 10.0.2.100/24, default route via
//! 10.0.2.2, the MTU), the gateway mapped to the host's loopback and only
//! 127.0.0.0/8 allowed (`--host-loopback --allow 127.0.0.0/8`), served on a
//! runtime of its own built as `conflux usernet` builds it (one thread,
//! tokio's current_thread runtime: [`CLI_MULTI_THREAD`] is false), started
//! from a thread of its own, and shut down (bounded) when dropped.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use conflux_usernet::{Usernet, UsernetConfig};
use tokio::sync::oneshot;

use crate::Skip;

/// Whether the forwarder's runtime is multi_thread: `conflux usernet`
/// runs on one thread unless told `--threads N` (crates/conflux/src/main.rs,
/// `Command::default_threads`).
pub(super) const CLI_MULTI_THREAD: bool = false;

/// The bound on `spawn_netns` returning and on `shutdown`.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Our forwarder is always here (it is a library of this workspace).
pub(super) fn available() -> Result<(), Skip> {
    Ok(())
}

/// Our forwarder serving one namespace; stopped and joined on drop.
pub(super) struct Ours(Worker);

impl Ours {
    /// Serves the namespace at `netns` with MTU `mtu`.
    pub(super) fn spawn(netns: &Path, mtu: usize) -> Result<Ours, String> {
        let allow = "127.0.0.0/8".parse().map_err(|e| format!("{e}"))?;
        let config = UsernetConfig::new().mtu(mtu).host_loopback(true).allow(allow).configure(true);
        let path = netns.to_owned();
        let worker = Worker::spawn("Usernet::spawn_netns", CLI_MULTI_THREAD, move |ready, stopped| async move {
            let usernet = match Usernet::spawn_netns(config, &path) {
                Ok(u) => u,
                Err(e) => {
                    let _ = ready.send(Err(format!("Usernet::spawn_netns({}): {e}", path.display())));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            let _ = stopped.await;
            if tokio::time::timeout(TIMEOUT, usernet.shutdown()).await.is_err() {
                eprintln!("   conflux-usernet: shutdown took over {TIMEOUT:?}");
            }
        })?;
        Ok(Ours(worker))
    }

    /// Panics if the forwarder has stopped.
    pub(super) fn check_alive(&mut self) {
        self.0.check_alive("conflux-usernet: the forwarder");
    }
}

/// A thread running a tokio runtime until told to stop; joined on drop.
pub(super) struct Worker {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Runs `body` (given a stop signal) on a runtime of its own in a new
    /// thread; returns once `body` reported ready (or failed).
    pub(super) fn spawn<F, Fut>(what: &'static str, multi_thread: bool, body: F) -> Result<Worker, String>
    where
        F: FnOnce(mpsc::Sender<Result<(), String>>, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut builder = if multi_thread {
                tokio::runtime::Builder::new_multi_thread()
            } else {
                tokio::runtime::Builder::new_current_thread()
            };
            let rt = builder.enable_all().build().expect("a tokio runtime");
            rt.block_on(body(ready_tx, stopped));
        });
        let mut worker = Worker { stop: Some(stop), thread: Some(thread) };
        match ready_rx.recv_timeout(TIMEOUT) {
            Ok(Ok(())) => Ok(worker),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // Left running: joining a thread stuck in its setup would hang.
                worker.stop.take();
                worker.thread.take();
                Err(format!("{what} not ready within {TIMEOUT:?}"))
            }
        }
    }

    /// Panics (naming `what`) if the thread has ended.
    pub(super) fn check_alive(&self, what: &str) {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            panic!("{what}: its thread ended");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("   a usernet bench worker thread panicked");
        }
    }
}
