//! Tests of the listener plumbing with a fake backend (flows are plain values).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn open_ok(stops: &Arc<AtomicUsize>) -> impl FnOnce(SocketAddr) -> Result<(SocketAddr, StopFn), ListenError> + use<> {
    let stops = stops.clone();
    move |key| {
        let port = if key.port() == 0 { 40_000 } else { key.port() };
        Ok((
            SocketAddr::new(key.ip(), port),
            Box::new(move || {
                stops.fetch_add(1, Ordering::SeqCst);
            }) as StopFn,
        ))
    }
}

#[tokio::test]
async fn dispatch_runs_each_flow_in_a_task() {
    let listeners = Listeners::<u32>::new();
    let stops = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cb = Callback::new(move |n: u32| {
        let tx = tx.clone();
        async move { tx.send(n).unwrap() }
    });
    let (listening, listener) = listeners.listen(addr(0), cb, open_ok(&stops)).unwrap();
    assert_eq!(listening.port(), 40_000);
    listener.dispatch(1).unwrap();
    listener.dispatch(2).unwrap();
    let mut got = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    got.sort();
    assert_eq!(got, [1, 2]);
}

#[tokio::test]
async fn unlisten_stops_dispatch_and_the_socket() {
    let listeners = Listeners::<u32>::new();
    let stops = Arc::new(AtomicUsize::new(0));
    let (_, listener) = listeners.listen(addr(5000), Callback::new(|_n: u32| async {}), open_ok(&stops)).unwrap();
    assert!(listeners.unlisten(addr(5000)));
    assert!(!listeners.unlisten(addr(5000)));
    assert_eq!(stops.load(Ordering::SeqCst), 1);
    assert!(listener.is_stopped());
    assert_eq!(listener.dispatch(7), Err(7));
    tokio::time::timeout(Duration::from_secs(1), listener.stopped()).await.unwrap();
}

#[tokio::test]
async fn listening_again_replaces() {
    let listeners = Listeners::<u32>::new();
    let stops = Arc::new(AtomicUsize::new(0));
    let (_, first) = listeners.listen(addr(5000), Callback::new(|_n: u32| async {}), open_ok(&stops)).unwrap();
    let (_, second) = listeners.listen(addr(5000), Callback::new(|_n: u32| async {}), open_ok(&stops)).unwrap();
    assert!(first.is_stopped() && !second.is_stopped());
    assert_eq!(stops.load(Ordering::SeqCst), 1);
    assert_eq!(first.dispatch(1), Err(1));
    assert_eq!(second.dispatch(2), Ok(()));
}

#[tokio::test]
async fn keys_are_address_and_port() {
    let listeners = Listeners::<u32>::new();
    let stops = Arc::new(AtomicUsize::new(0));
    let other = SocketAddr::from(([127, 0, 0, 2], 5000));
    let any = SocketAddr::from(([0u16; 8], 5000));
    let (_, first) = listeners.listen(addr(5000), Callback::new(|_n: u32| async {}), open_ok(&stops)).unwrap();
    let (l, second) = listeners.listen(other, Callback::new(|_n: u32| async {}), open_ok(&stops)).unwrap();
    assert_eq!(l.local_addr(), other);
    let (_, third) = listeners.listen(any, Callback::new(|_n: u32| async {}), open_ok(&stops)).unwrap();
    assert!(!first.is_stopped() && !second.is_stopped() && !third.is_stopped(), "different addresses coexist");
    assert!(!listeners.unlisten(SocketAddr::from(([127, 0, 0, 3], 5000))));
    assert!(listeners.unlisten(other));
    assert!(second.is_stopped() && !first.is_stopped() && !third.is_stopped());
    assert!(listeners.unlisten(any));
    assert!(listeners.unlisten(addr(5000)));
    assert_eq!(stops.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn port_zero_registers_under_the_bound_port() {
    let listeners = Listeners::<u32>::new();
    let stops = Arc::new(AtomicUsize::new(0));
    let (l, listener) = listeners.listen(addr(0), Callback::new(|_n: u32| async {}), open_ok(&stops)).unwrap();
    assert_eq!(l.port(), 40_000);
    assert!(!listeners.unlisten(addr(0)));
    assert!(listeners.unlisten(addr(40_000)));
    assert!(listener.is_stopped());
}

#[tokio::test]
async fn a_panicking_callback_is_contained() {
    let listeners = Listeners::<u32>::new();
    let stops = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let s = served.clone();
    let cb = Callback::new(move |n: u32| {
        let s = s.clone();
        async move {
            tokio::task::yield_now().await;
            assert!(n != 13, "unlucky");
            s.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (_, listener) = listeners.listen(addr(0), cb, open_ok(&stops)).unwrap();
    listener.dispatch(13).unwrap();
    listener.dispatch(1).unwrap();
    assert!(listeners.tasks.wait_idle(Duration::from_secs(5)).await);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert_eq!(listeners.running_tasks(), 0);
}

#[tokio::test(start_paused = true)]
async fn disconnect_waits_then_aborts_stragglers() {
    let listeners = Listeners::<u32>::new();
    let stops = Arc::new(AtomicUsize::new(0));
    let cb = Callback::new(|n: u32| async move {
        if n == 0 {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    let (_, listener) = listeners.listen(addr(0), cb, open_ok(&stops)).unwrap();
    listener.dispatch(0).unwrap();
    listener.dispatch(1).unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let c = closed.clone();
    let started = tokio::time::Instant::now();
    listeners
        .disconnect(Duration::from_secs(2), move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .await;
    assert_eq!(closed.load(Ordering::SeqCst), 1);
    assert_eq!(listeners.running_tasks(), 0);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(listener.is_stopped());
    assert!(matches!(
        listeners.listen(addr(0), Callback::new(|_n: u32| async {}), open_ok(&stops)),
        Err(ListenError::Disconnected)
    ));
}

/// The accept loop tells "the socket was shut down by unlisten" from an
/// accept error by `is_stopped`: it must already be true while the stop
/// function (the socket's shutdown) runs.
#[tokio::test]
async fn the_listener_reads_stopped_before_its_socket_is_shut_down() {
    let listeners = Listeners::<u32>::new();
    let slot: Arc<Mutex<Option<Listener<u32>>>> = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(None));
    let (s, v) = (slot.clone(), seen.clone());
    let open = move |key: SocketAddr| {
        Ok((
            key,
            Box::new(move || {
                let stopped = lock(&s).as_ref().map(|l: &Listener<u32>| l.is_stopped());
                *lock(&v) = Some(stopped);
            }) as StopFn,
        ))
    };
    let (_, listener) = listeners.listen(addr(5001), Callback::new(|_n: u32| async {}), open).unwrap();
    *lock(&slot) = Some(listener);
    assert!(listeners.unlisten(addr(5001)));
    assert_eq!(*lock(&seen), Some(Some(true)), "is_stopped was false while the socket was being shut down");
}
