//! The driver task: owns the device and runs the core's call order once per
//! wake-up, holding the lock only for that (never while reading or writing
//! the device); wakers are woken and accepted flows dispatched after the
//! lock is released.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use crate::device::{FrameBuf, FrameDevice};
use crate::stack::{Kick, Shared, dispatch};

/// Frames received per driver round before the core processes them.
const RX_BATCH: usize = 256;

/// While the stack is busy (this round had frames or a kick, or a task ran
/// a round inline since the last one), the driver's sleep ends at most
/// this far ahead. A task running egress itself wakes the driver only for
/// a deadline earlier than the armed one; every new timer (a delayed ACK,
/// a retransmission) is at least this far out, so a busy stack's inline
/// rounds wake the driver only this often. An idle stack sleeps until its
/// next deadline.
const HORIZON: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(10);

/// Runs until the device fails (the stack is then marked dead and everything
/// waiting on it woken: `stack::device_failed`) or the last handle and flow
/// are gone. Each
/// round: received frames and due timers into the core, egress out (unless
/// the device still has a backlog), events into wake-ups; then the backlog
/// goes to the device in one batch and the task sleeps on the device, a
/// kick or the core's next deadline.
pub(crate) async fn drive<D: FrameDevice>(weak: Weak<Shared>, kick: Arc<Kick>, mut device: D) {
    let mut rx: Vec<FrameBuf> = Vec::new();
    let mut produced: Vec<FrameBuf> = Vec::new();
    let mut tx: VecDeque<FrameBuf> = VecDeque::new();
    let mut wake = Vec::new();
    let mut accepted = Vec::new();
    let mut udp_wake = crate::udp::Wake::default();
    let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
    let mut sleep = pin!(tokio::time::sleep_until(far()));
    // The deadline the sleep is armed for (`None`: far away).
    let mut armed: Option<smoltcp::time::Instant> = None;
    loop {
        let kicked = kick.take();
        // Egress waits while the device still holds a backlog: the round
        // that finds it drained runs it.
        let egress_skipped = !tx.is_empty();
        {
            let Some(shared) = weak.upgrade() else { return };
            let at = tokio::time::Instant::now();
            let rearm = {
                let mut guard = shared.lock();
                let st = &mut *guard;
                let now = shared.time(at).max(st.clock);
                st.clock = now;
                let busy = kicked || !rx.is_empty() || std::mem::take(&mut st.inline_active);
                if !rx.is_empty() {
                    st.core.handle_frames(now, &mut rx);
                }
                kick.rx_held.store(false, Ordering::SeqCst);
                st.core.handle_timeout(now);
                if !egress_skipped {
                    st.core.poll_transmit(now, &mut produced);
                    st.out.extend(produced.drain(..));
                }
                // Frames made by flows' inline rounds wait in `out`, behind
                // ours (`driver_sending`) when we hold a backlog.
                if !st.out.is_empty() {
                    if tx.is_empty()
                        && let Some(direct) = &shared.direct
                    {
                        crate::stack::send_direct(&shared, &**direct, &mut st.out, at);
                    }
                    tx.extend(st.out.drain(..));
                }
                st.driver_sending = !tx.is_empty();
                st.drain_events(now, &mut wake, &mut accepted);
                udp_wake.collect(&mut st.core);
                // With egress skipped the deadline waits for the backlog's
                // round. A busy stack sleeps at most `HORIZON`; an earlier
                // sleep still armed is kept (an early wake costs a round,
                // re-arming costs one per round).
                let mut wake_at = st.core.poll_timeout().filter(|_| !egress_skipped);
                if busy && !egress_skipped {
                    let horizon = now + HORIZON;
                    wake_at = Some(wake_at.map_or(horizon, |t| t.min(horizon)));
                    if let Some(a) = armed
                        && a > now
                        && wake_at.is_some_and(|w| a <= w)
                        && !sleep.is_elapsed()
                    {
                        wake_at = armed;
                    }
                }
                st.armed = wake_at;
                // The sleep is re-armed only when its deadline moves (or it
                // fired): most rounds keep the one they had.
                (wake_at != armed || sleep.is_elapsed()).then_some(wake_at)
            };
            wake.drain(..).for_each(|w: std::task::Waker| w.wake());
            // What inline deliveries of our frames left to wake.
            crate::stack::wake_deferred();
            udp_wake.wake(&shared);
            dispatch(&shared, &mut accepted);
            if let Some(wake_at) = rearm {
                sleep.as_mut().reset(wake_at.map_or_else(far, |t| shared.instant(t)));
                armed = wake_at;
            }
        }
        let mut failure = None;
        let alive = poll_fn(|cx| {
            if !tx.is_empty()
                && let Poll::Ready(Err(e)) = device.poll_send_batch(cx, &mut tx)
            {
                tracing::warn!(error = %e, "device failed: the stack stops");
                failure = Some(e);
                return Poll::Ready(false);
            }
            if rx.len() < RX_BATCH {
                let room = RX_BATCH - rx.len();
                // Set before the device hands frames over: an inline
                // delivery that finds the device's queue drained by this
                // sees it (`Kick::rx_held`).
                kick.rx_held.store(true, Ordering::SeqCst);
                let polled = device.poll_recv(cx, &mut rx, room);
                kick.rx_held.store(!rx.is_empty(), Ordering::SeqCst);
                if let Poll::Ready(Err(e)) = polled {
                    tracing::debug!(error = %e, "device closed: the stack stops");
                    failure = Some(e);
                    return Poll::Ready(false);
                }
            }
            if !rx.is_empty() || (egress_skipped && tx.is_empty()) {
                return Poll::Ready(true);
            }
            if kick.poll(cx).is_ready() || sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            Poll::Pending
        })
        .await;
        if !alive {
            if let Some(e) = failure {
                crate::stack::device_failed(&weak, &e);
            }
            return;
        }
    }
}
