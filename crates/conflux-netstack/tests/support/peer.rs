//! A scripted TCP peer: raw TCP/IPv4 segments written on the far end of an
//! in-memory IP link, for tests that need segments no stack would send.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use conflux_netstack::{Checksums, FrameDevice, LinkConfig, LinkEnd, NetFlow, NetStack, link_pair};
use conflux_testkit::within;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// A segment as the peer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seg {
    pub sport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload: Vec<u8>,
}

/// The one's complement sum of `data`, folded (0xffff-complemented on use).
fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 TCP segment with valid IPv4 and TCP checksums.
pub fn build(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, flags: u8, window: u16, payload: &[u8]) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else { panic!("IPv4 only") };
    let total = 40 + payload.len();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&s.ip().octets());
    p.extend_from_slice(&d.ip().octets());
    p.extend_from_slice(&s.port().to_be_bytes());
    p.extend_from_slice(&d.port().to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    p.extend_from_slice(&[0x50, flags]);
    p.extend_from_slice(&window.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(payload);
    let ip = fold(sum16(&p[..20], 0));
    p[10..12].copy_from_slice(&ip.to_be_bytes());
    let mut pseudo = sum16(&p[12..20], 6);
    pseudo += (total - 20) as u32;
    let tcp = fold(sum16(&p[20..], pseudo));
    p[36..38].copy_from_slice(&tcp.to_be_bytes());
    p
}

pub fn parse(p: &[u8]) -> Seg {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let t = &p[ihl..total];
    let off = usize::from(t[12] >> 4) * 4;
    Seg {
        sport: u16::from_be_bytes([t[0], t[1]]),
        seq: u32::from_be_bytes(t[4..8].try_into().unwrap()),
        ack: u32::from_be_bytes(t[8..12].try_into().unwrap()),
        flags: t[13],
        window: u16::from_be_bytes([t[14], t[15]]),
        payload: t[off..].to_vec(),
    }
}

/// The scripted peer at 10.0.0.2 and our stack at 10.0.0.1.
pub struct Peer {
    pub end: LinkEnd,
    pub me: SocketAddr,
    pub stack_addr: SocketAddr,
    /// The window the peer advertises.
    pub window: u16,
}

impl Peer {
    /// A peer on port `my_port` and a stack (to listen or connect on
    /// `stack_port`), on an IP link with `checksums`.
    pub fn new(my_port: u16, stack_port: u16, checksums: Checksums) -> (Peer, NetStack) {
        let (a, b) = link_pair(LinkConfig::ip().checksums(checksums));
        let stack = NetStack::new(super::side(true), a);
        let peer = Peer {
            end: b,
            me: super::addr(super::B4, my_port),
            stack_addr: super::addr(super::A4, stack_port),
            window: 0xffff,
        };
        (peer, stack)
    }

    pub fn segment(&self, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        build(self.me, self.stack_addr, seq, ack, flags, self.window, payload)
    }

    pub fn send(&mut self, seq: u32, ack: u32, flags: u8, payload: &[u8]) {
        let frame = self.segment(seq, ack, flags, payload);
        self.end.send(frame.into()).unwrap();
    }

    /// The next segment from the stack within `limit` (virtual time).
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Seg> {
        let end = &mut self.end;
        tokio::time::timeout(
            limit,
            poll_fn(|cx| {
                let mut got = Vec::new();
                match end.poll_recv(cx, &mut got, 1) {
                    Poll::Ready(Ok(())) => Poll::Ready(parse(&got[0])),
                    Poll::Ready(Err(e)) => panic!("link: {e}"),
                    Poll::Pending => Poll::Pending,
                }
            }),
        )
        .await
        .ok()
    }

    pub async fn recv(&mut self) -> Seg {
        self.recv_within(Duration::from_secs(5)).await.expect("a segment from the stack")
    }

    /// The next segment carrying data within `limit`.
    pub async fn recv_data_within(&mut self, limit: Duration) -> Option<Seg> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let s = self.recv_within(left).await?;
            if !s.payload.is_empty() {
                return Some(s);
            }
        }
    }

    /// Accepts a connection to the stack's listener: SYN, SYN-ACK, ACK.
    /// Returns (our next seq, the stack's next seq) and the server's flow.
    pub async fn handshake(&mut self, stack: &NetStack) -> (u32, u32, NetFlow) {
        let (_, mut rx) = super::listen_into(stack, self.stack_addr.port(), None).unwrap();
        self.send(1000, 0, SYN, b"");
        let synack = self.recv().await;
        assert_eq!(synack.flags & (SYN | ACK), SYN | ACK, "{synack:?}");
        assert_eq!(synack.ack, 1001);
        let theirs = synack.seq.wrapping_add(1);
        self.send(1001, theirs, ACK, b"");
        let flow = within("accept", Duration::from_secs(5), rx.recv()).await.unwrap();
        (1001, theirs, flow)
    }
}
