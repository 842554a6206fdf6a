//! The flow conformance kit over kernel TCP ([`HostFlow`]) on 127.0.0.1 and
//! ::1, and its borrowed-slice writes.
//!
//! Each pair is a connect to a fresh listener of the factory's own stack (the
//! listener is stopped once the pair exists; established flows keep running),
//! so `open_resources` (the stack's open flows) counts this factory's flows only.

use std::net::{IpAddr, SocketAddr};

use conflux_conformance::{Caps, FlowFactory, PairFuture, flow_conformance};
use conflux_flow::FlowError;
use conflux_tcp::{ConnectOptions, TcpStack};
use conflux_tcp_host::{HostFlow, HostStack};

struct HostPairs {
    stack: HostStack,
    ip: IpAddr,
}

impl HostPairs {
    fn new(ip: &str) -> HostPairs {
        HostPairs { stack: HostStack::new(), ip: ip.parse().expect("an IP") }
    }
}

impl FlowFactory for HostPairs {
    type Flow = HostFlow;

    fn caps(&self) -> Caps {
        Caps::kernel()
    }

    fn pair(&self) -> PairFuture<'_, HostFlow> {
        Box::pin(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let listening = self
                .stack
                .listen(0, None, move |flow| {
                    let _ = tx.send(flow);
                    std::future::ready(())
                })
                .map_err(FlowError::other)?;
            let addr = SocketAddr::new(self.ip, listening.port());
            let client = self.stack.create_connection(addr, ConnectOptions::new()).await.map_err(FlowError::other);
            let server = rx.recv().await;
            self.stack.unlisten(listening.port());
            let server = server.ok_or_else(|| FlowError::other("the listener ended without a flow"))?;
            Ok((client?, server))
        })
    }

    fn open_resources(&self) -> Option<usize> {
        Some(self.stack.open_flows())
    }
}

flow_conformance!(host_v4, HostPairs::new("127.0.0.1"));
flow_conformance!(host_v6, HostPairs::new("::1"));

/// A kernel TCP flow writes a caller's borrowed slices straight to the
/// socket: a 16 MiB vectored write is partly taken (more than the socket
/// buffers hold), the rest offered again, every byte arrives in order.
#[tokio::test]
async fn a_borrowed_write_is_partly_taken_and_completes() {
    use conflux_flow::{Flow, FlowExt, Shutdown};
    use conflux_testkit::{TIMEOUT, payload, within};

    let (mut client, mut server) = HostPairs::new("127.0.0.1").pair().await.expect("a pair");
    assert!(client.is_write_borrowed());
    let data = payload(5, 16 << 20);
    let write = async {
        let (mut at, mut partial) = (0, false);
        while at < data.len() {
            let half = (data.len() - at) / 2;
            let slices = [std::io::IoSlice::new(&data[at..at + half]), std::io::IoSlice::new(&data[at + half..])];
            let n = std::future::poll_fn(|cx| client.poll_write_borrowed(cx, &slices)).await.expect("write");
            assert!(n > 0, "a ready borrowed write takes something");
            partial |= n < data.len() - at;
            at += n;
        }
        client.shutdown(Shutdown::Write).await.expect("shutdown");
        partial
    };
    let (partial, got) = within("borrowed writes", TIMEOUT, async { tokio::join!(write, server.read_to_end()) }).await;
    assert!(partial, "the socket takes less than 16 MiB at once");
    assert!(got.expect("read") == data[..], "every byte in order");
}

/// Input that arrives after a close (the peer had not ended its side: a
/// TLS server's session tickets arrive so, unasked) loses nothing: the
/// closed socket lingers, discarding it, so the kernel answers with no RST
/// that would discard what was written before the close and is still
/// queued (small receive buffers keep most of it queued here). The peer
/// reads every byte, then Eof.
#[tokio::test]
async fn input_arriving_after_a_close_loses_nothing_written_before_it() {
    use conflux_flow::{FlowExt, Shutdown};
    use conflux_tcp_host::HostConfig;
    use conflux_testkit::{TIMEOUT, payload, within};

    let config = HostConfig::new().send_buffer_size(Some(256 << 10)).recv_buffer_size(Some(16 << 10));
    let fx = HostPairs { stack: HostStack::with_config(config), ip: "127.0.0.1".parse().expect("an IP") };
    let (mut client, mut server) = fx.pair().await.expect("a pair");
    let data = payload(7, 160 << 10);
    client.write(data.clone()).await.expect("write");
    client.close().await.expect("close");
    // The peer speaks after the close, then reads.
    server.write("late").await.expect("a write after the peer's close");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let got = within("read", TIMEOUT, server.read_to_end()).await.expect("read: no reset");
    assert!(got == data, "every byte written before the close, then Eof");
    server.shutdown(Shutdown::Write).await.expect("shutdown");
    assert_eq!(fx.stack.open_flows(), 1, "the closed flow left the table at once");
}
