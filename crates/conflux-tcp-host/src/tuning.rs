//! A connection's dead-peer options (keepalive, `TCP_USER_TIMEOUT`), set
//! at once or, with [`HostConfig::defer_options`](crate::HostConfig::defer_options),
//! once the connection has lived a while: a short connection (a request
//! and its answer on this machine) then never pays their five system
//! calls.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use conflux_tcp::Keepalive;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::kernel_keepalive;

/// What a connection gets: a user timeout and a keepalive, each optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tuning {
    pub(crate) user_timeout: Option<Duration>,
    pub(crate) keepalive: Option<Keepalive>,
}

impl Tuning {
    /// Nothing to set.
    pub(crate) fn is_empty(&self) -> bool {
        self.user_timeout.is_none() && self.keepalive.is_none()
    }

    /// Sets the options on `sock`: `TCP_USER_TIMEOUT` (one call), then
    /// `SO_KEEPALIVE` and its three timings (four). Set on an established
    /// connection, Linux times the first probe from the last segment
    /// received (setting `TCP_KEEPIDLE` re-arms the timer so), and the
    /// user timeout from the oldest unacknowledged segment's first send, as
    /// if they had been set before the connect.
    pub(crate) fn apply(&self, sock: SockRef<'_>) -> io::Result<()> {
        if let Some(ut) = self.user_timeout {
            sock.set_tcp_user_timeout(Some(ut))?;
        }
        if let Some(ka) = &self.keepalive {
            set_keepalive(sock, ka)?;
        }
        Ok(())
    }
}

/// `SO_KEEPALIVE` on, with `ka`'s timings as the kernel rounds them.
pub(crate) fn set_keepalive(sock: SockRef<'_>, ka: &Keepalive) -> io::Result<()> {
    let k = kernel_keepalive(ka);
    let tk = TcpKeepalive::new().with_time(k.after).with_interval(k.interval).with_retries(k.probes);
    sock.set_tcp_keepalive(&tk)
}

/// Connections whose options wait, oldest first, and the task that sets
/// them once due (it runs while any wait, and ends when none does).
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When each is due (in the order they opened: the delay is the
    /// stack's), the connection (gone if it closed meanwhile) and what it
    /// gets.
    queue: VecDeque<(Instant, Weak<TcpStream>, Tuning)>,
    /// A [`sweep`] task is running.
    sweeping: bool,
}

impl Deferred {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `tuning` for `stream` once `delay` has passed (a task on the current
    /// runtime sets it, started when none runs).
    pub(crate) fn push(self: &Arc<Self>, stream: &Arc<TcpStream>, tuning: Tuning, delay: Duration) {
        let mut st = self.lock();
        st.queue.push_back((Instant::now() + delay, Arc::downgrade(stream), tuning));
        if !st.sweeping {
            st.sweeping = true;
            tokio::spawn(sweep(self.clone(), delay));
        }
    }

    /// Connections waiting (closed ones included until their turn).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// A sweep task is running.
    #[cfg(test)]
    pub(crate) fn sweeping(&self) -> bool {
        self.lock().sweeping
    }
}

/// Sets the options of every connection due, then sleeps until the next is
/// due plus half the delay (so that one wake-up serves the connections of
/// half a delay, not one each): a connection gets its options between
/// `delay` and 1.5 `delay` after it opened. Ends when none waits.
async fn sweep(deferred: Arc<Deferred>, delay: Duration) {
    let mut due = Vec::new();
    loop {
        let next = {
            let mut st = deferred.lock();
            let now = Instant::now();
            while st.queue.front().is_some_and(|(at, ..)| *at <= now) {
                due.extend(st.queue.pop_front());
            }
            let next = st.queue.front().map(|(at, ..)| *at);
            if next.is_none() && due.is_empty() {
                st.sweeping = false;
                return;
            }
            next
        };
        for (_, stream, tuning) in due.drain(..) {
            // Closed already: nothing to set.
            let Some(stream) = stream.upgrade() else { continue };
            if let Err(e) = tuning.apply(SockRef::from(&*stream)) {
                tracing::debug!(error = %e, "setting a connection's keepalive and user timeout");
            }
        }
        if let Some(at) = next {
            tokio::time::sleep_until(at + delay / 2).await;
        }
    }
}
