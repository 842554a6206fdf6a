//! Our side: [`conflux_usernet::Usernet::spawn_netns`] on a namespace path,
//! configured (`--configure`: address 10.0.2.100/24, default route via
//! 10.0.2.2, the MTU), the gateway mapped to the host's loopback and only
//! 127.0.0.0/8 allowed (`--host-loopback --allow 127.0.0.0/8`), served on a
//! runtime of its own built as `conflux usernet` builds it (tokio's
//! multi_thread default: a worker per core), started from a thread of its
//! own, and shut down (bounded) when dropped.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use conflux_usernet::{Usernet, UsernetConfig};
use tokio::sync::oneshot;

use crate::Skip;

/// The bound on `spawn_netns` returning and on `shutdown`.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Our forwarder is always here (it is a library of this workspace).
pub(super) fn available() -> Result<(), Skip> {
    Ok(())
}

/// Our forwarder serving one namespace; stopped and joined on drop.
pub(super) struct Ours {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ours {
    /// Serves the namespace at `netns` with MTU `mtu`.
    pub(super) fn spawn(netns: &Path, mtu: usize) -> Result<Ours, String> {
        let allow = "127.0.0.0/8".parse().map_err(|e| format!("{e}"))?;
        let config = UsernetConfig::new().mtu(mtu).host_loopback(true).allow(allow).configure(true);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let path = netns.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
            rt.block_on(async move {
                let usernet = match Usernet::spawn_netns(config, &path) {
                    Ok(u) => u,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("Usernet::spawn_netns({}): {e}", path.display())));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let _ = stopped.await;
                if tokio::time::timeout(TIMEOUT, usernet.shutdown()).await.is_err() {
                    eprintln!("   conflux-usernet: shutdown took over {TIMEOUT:?}");
                }
            });
        });
        let mut ours = Ours { stop: Some(stop), thread: Some(thread) };
        match ready_rx.recv_timeout(TIMEOUT) {
            Ok(Ok(())) => Ok(ours),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // Left running: joining a thread stuck in spawn_netns would hang.
                ours.stop.take();
                ours.thread.take();
                Err(format!("Usernet::spawn_netns({}) did not return within {TIMEOUT:?}", netns.display()))
            }
        }
    }

    /// Panics if the forwarder has stopped.
    pub(super) fn check_alive(&mut self) {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            panic!("conflux-usernet: the forwarder's thread ended");
        }
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("   conflux-usernet: the forwarder's thread panicked");
        }
    }
}
