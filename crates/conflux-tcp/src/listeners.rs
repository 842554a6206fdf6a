//! Backend-independent listener plumbing: the callback registry, one task per
//! accepted flow, panics caught and logged, graceful disconnect.
//!
//! A backend owns the listening sockets and the accept loops; this module owns
//! the rules: which listener is current on an (address, port) key, when a
//! callback may still fire, and how the callback tasks end.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use crate::{ListenError, Listening, canonical_addr};

/// A boxed, sendable future of a callback.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a backend runs to stop accepting on its listening socket (called once,
/// with the registry lock held, so it must not block).
pub type StopFn = Box<dyn FnOnce() + Send + 'static>;

/// A listen callback: called once per established flow; its future runs in its own task.
pub struct Callback<F>(Arc<dyn Fn(F) -> BoxFuture + Send + Sync + 'static>);

impl<F> Clone for Callback<F> {
    fn clone(&self) -> Self {
        Callback(self.0.clone())
    }
}

impl<F> fmt::Debug for Callback<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Callback")
    }
}

impl<F: Send + 'static> Callback<F> {
    /// Wraps an async callback.
    pub fn new<C, Fut>(callback: C) -> Callback<F>
    where
        C: Fn(F) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Callback(Arc::new(move |flow| Box::pin(callback(flow)) as BoxFuture))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("?")
}

/// One listener's shared state: the registry and the backend's accept loop see it.
struct Active<F> {
    /// The key it is registered under (the port filled in).
    key: SocketAddr,
    /// `true` while flows may be dispatched. Dispatch holds the read lock while
    /// calling the callback; stopping takes the write lock, so once a stop
    /// returns no callback is running its synchronous part or will start.
    gate: RwLock<bool>,
    callback: Callback<F>,
    stop: Mutex<Option<StopFn>>,
    stopped: watch::Sender<bool>,
}

impl<F> Active<F> {
    fn stop(&self) {
        *self.gate.write().unwrap_or_else(PoisonError::into_inner) = false;
        // Stopped first: an accept failing because `stop` shut the socket
        // down then reads as the end of listening, not as an accept error.
        self.stopped.send_replace(true);
        if let Some(stop) = lock(&self.stop).take() {
            stop();
        }
        tracing::trace!(key = %self.key, "listener stopped");
    }
}

/// The accept loop's view of its listener (from [`Listeners::listen`]).
pub struct Listener<F> {
    active: Arc<Active<F>>,
    tasks: Arc<Tasks>,
}

impl<F> fmt::Debug for Listener<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener").field("key", &self.active.key).finish_non_exhaustive()
    }
}

impl<F: Send + 'static> Listener<F> {
    /// Hands an accepted flow to the callback, in a new task. Gives the flow
    /// back if the listener was stopped meanwhile (the backend then closes it).
    ///
    /// Must be called within a tokio runtime.
    pub fn dispatch(&self, flow: F) -> Result<(), F> {
        let gate = self.active.gate.read().unwrap_or_else(PoisonError::into_inner);
        if !*gate {
            return Err(flow);
        }
        let callback = &self.active.callback.0;
        let key = self.active.key;
        match std::panic::catch_unwind(AssertUnwindSafe(|| callback(flow))) {
            Ok(fut) => self.tasks.spawn(key, fut),
            Err(payload) => tracing::error!(%key, panic = panic_message(&*payload), "listen callback panicked"),
        }
        drop(gate);
        Ok(())
    }

    /// Whether the listener was stopped (unlisten, replaced, disconnect).
    pub fn is_stopped(&self) -> bool {
        *self.active.stopped.borrow()
    }

    /// Resolves once the listener is stopped.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.active.stopped.subscribe();
        async move {
            // An error means the sender is gone: the listener is gone too.
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

struct State<F> {
    keys: HashMap<SocketAddr, Arc<Active<F>>>,
    disconnected: bool,
}

/// The listener registry of one stack. Generic over the backend's flow type.
pub struct Listeners<F> {
    state: Mutex<State<F>>,
    tasks: Arc<Tasks>,
}

impl<F> fmt::Debug for Listeners<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Listeners")
            .field("keys", &state.keys.keys().collect::<Vec<_>>())
            .field("disconnected", &state.disconnected)
            .field("tasks", &self.tasks.running())
            .finish()
    }
}

impl<F: Send + 'static> Default for Listeners<F> {
    fn default() -> Self {
        Listeners::new()
    }
}

impl<F: Send + 'static> Listeners<F> {
    /// An empty registry.
    pub fn new() -> Listeners<F> {
        Listeners {
            state: Mutex::new(State { keys: HashMap::new(), disconnected: false }),
            tasks: Arc::new(Tasks { inner: Mutex::new(TasksInner::default()), idle: Notify::new() }),
        }
    }

    /// Registers a listener under the key `addr` (an address, possibly
    /// unspecified, and a port; an IPv4-mapped IPv6 address counts as its
    /// IPv4 address). Any listener under the same key (unless the
    /// port is 0) is stopped first; listeners on other addresses of the same
    /// port are left alone. Then `open(addr)` binds the backend's socket and
    /// returns the bound address and how to stop it; the listener is
    /// registered (and the returned [`Listening`] reports it) under `addr`
    /// with the bound port. The backend then runs its accept loop with the
    /// returned [`Listener`].
    pub fn listen(
        &self,
        addr: SocketAddr,
        callback: Callback<F>,
        open: impl FnOnce(SocketAddr) -> Result<(SocketAddr, StopFn), ListenError>,
    ) -> Result<(Listening, Listener<F>), ListenError> {
        let addr = canonical_addr(addr);
        let mut state = lock(&self.state);
        if state.disconnected {
            return Err(ListenError::Disconnected);
        }
        if addr.port() != 0
            && let Some(old) = state.keys.remove(&addr)
        {
            tracing::trace!(key = %addr, "replacing listener");
            old.stop();
        }
        let (bound, stop) = open(addr)?;
        let key = SocketAddr::new(addr.ip(), bound.port());
        let active = Arc::new(Active {
            key,
            gate: RwLock::new(true),
            callback,
            stop: Mutex::new(Some(stop)),
            stopped: watch::Sender::new(false),
        });
        if let Some(old) = state.keys.insert(key, active.clone()) {
            old.stop();
        }
        Ok((Listening::new(key), Listener { active, tasks: self.tasks.clone() }))
    }

    /// Stops the listener registered under `key` (the address given to
    /// [`listen`](Self::listen), with the bound port); returns whether there
    /// was one. Once this returns no callback of it fires.
    pub fn unlisten(&self, key: SocketAddr) -> bool {
        let mut state = lock(&self.state);
        match state.keys.remove(&canonical_addr(key)) {
            Some(active) => {
                active.stop();
                true
            }
            None => false,
        }
    }

    /// The number of callback tasks still running.
    pub fn running_tasks(&self) -> usize {
        self.tasks.running()
    }

    /// Stops every listener and refuses new ones, runs `close_flows` (the
    /// backend closes its flows gracefully so callbacks see Eof), waits up to
    /// `grace` for the callback tasks, then aborts the rest (bounded by
    /// `grace` again).
    pub async fn disconnect(&self, grace: Duration, close_flows: impl FnOnce()) {
        {
            let mut state = lock(&self.state);
            state.disconnected = true;
            for (_, active) in state.keys.drain() {
                active.stop();
            }
        }
        close_flows();
        if !self.tasks.wait_idle(grace).await {
            let n = self.tasks.abort_all();
            tracing::debug!(tasks = n, "aborted callback tasks still running after the grace period");
            if !self.tasks.wait_idle(grace).await {
                tracing::warn!(tasks = self.tasks.running(), "callback tasks survived their abort");
            }
        }
    }
}

#[derive(Default)]
struct TasksInner {
    next: u64,
    running: HashMap<u64, AbortHandle>,
}

/// The callback tasks of one stack.
struct Tasks {
    inner: Mutex<TasksInner>,
    idle: Notify,
}

/// Removes its task from the set when the task ends (completes, panics or is aborted).
struct TaskGuard {
    tasks: Arc<Tasks>,
    id: u64,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let mut inner = lock(&self.tasks.inner);
        inner.running.remove(&self.id);
        if inner.running.is_empty() {
            self.tasks.idle.notify_waiters();
        }
    }
}

impl Tasks {
    fn spawn(self: &Arc<Self>, key: SocketAddr, fut: BoxFuture) {
        // The lock is held across spawn so the task's guard (which takes it)
        // cannot remove the entry before it is inserted.
        let mut inner = lock(&self.inner);
        let id = inner.next;
        inner.next += 1;
        let guard = TaskGuard { tasks: self.clone(), id };
        let handle = tokio::spawn(async move {
            let _guard = guard;
            if let Err(payload) = CatchUnwind(fut).await {
                tracing::error!(%key, panic = panic_message(&*payload), "listen callback panicked; its flow is closed");
            }
        });
        inner.running.insert(id, handle.abort_handle());
    }

    fn running(&self) -> usize {
        lock(&self.inner).running.len()
    }

    fn abort_all(&self) -> usize {
        let inner = lock(&self.inner);
        inner.running.values().for_each(AbortHandle::abort);
        inner.running.len()
    }

    /// Waits until no task runs; false if `limit` passed first.
    async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.running() == 0;
            }
        }
    }
}

/// Polls a future, turning a panic into an `Err` with the payload. The
/// panicked future is never polled again (it is dropped with the wrapper,
/// which drops, and so closes, the flow it owned).
struct CatchUnwind(BoxFuture);

impl Future for CatchUnwind {
    type Output = Result<(), Box<dyn Any + Send>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = &mut self.get_mut().0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

#[cfg(test)]
mod tests;
