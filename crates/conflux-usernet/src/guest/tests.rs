//! The guest link over an in-memory device: what it answers, what it passes
//! to the stack (the same buffers, unchanged), how its answers are sent.

use std::sync::{Arc, Mutex};
use std::task::Waker;

use conflux_netstack::Medium;

use super::*;
use crate::dhcp::tests::{MAC, UDHCPC_DISCOVER, udp_frame};
use crate::ra::tests::{fix_checksum, hex, solicitation};

const GW_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

#[derive(Default)]
struct MemState {
    /// Frames the "guest" sent, waiting for the link to receive them.
    rx: VecDeque<FrameBuf>,
    /// Each batch the link sent, as bytes.
    batches: Vec<Vec<Vec<u8>>>,
    /// Sends wait (Pending) while set.
    blocked: bool,
    /// Receive ends with this once `rx` is empty.
    end: Option<io::ErrorKind>,
}

/// An in-memory device; the test keeps a handle to its state.
#[derive(Clone, Default)]
struct Mem(Arc<Mutex<MemState>>);

impl Mem {
    fn push(&self, frame: Vec<u8>) -> *const u8 {
        let frame = FrameBuf::from_vec(frame);
        let ptr = frame.as_ptr();
        self.0.lock().unwrap().rx.push_back(frame);
        ptr
    }
    fn sent(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().batches.iter().flatten().cloned().collect()
    }
}

impl FrameDevice for Mem {
    fn caps(&self) -> DeviceCaps {
        DeviceCaps::new(Medium::Ethernet, 1500)
    }
    fn poll_recv(&mut self, _cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        let mut st = self.0.lock().unwrap();
        if st.rx.is_empty() {
            return match st.end {
                Some(kind) => Poll::Ready(Err(io::Error::new(kind, "the test's end"))),
                None => Poll::Pending,
            };
        }
        for _ in 0..max {
            let Some(f) = st.rx.pop_front() else { break };
            frames.push(f);
        }
        Poll::Ready(Ok(()))
    }
    fn poll_send_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.0.lock().unwrap().blocked { Poll::Pending } else { Poll::Ready(Ok(())) }
    }
    fn send(&mut self, frame: FrameBuf) -> io::Result<()> {
        self.0.lock().unwrap().batches.push(vec![frame.into_vec()]);
        Ok(())
    }
    fn poll_send_batch(&mut self, _cx: &mut Context<'_>, frames: &mut VecDeque<FrameBuf>) -> Poll<io::Result<()>> {
        let mut st = self.0.lock().unwrap();
        if st.blocked {
            return Poll::Pending;
        }
        let batch = frames.drain(..).map(FrameBuf::into_vec).collect();
        st.batches.push(batch);
        Poll::Ready(Ok(()))
    }
}

fn new_link(config: &UsernetConfig) -> (GuestLink<Mem>, Mem) {
    let mem = Mem::default();
    let mut link = GuestLink::new(config, GW_MAC, mem.clone());
    link.set_pool(FramePool::new());
    (link, mem)
}

fn recv(link: &mut GuestLink<Mem>) -> Poll<io::Result<Vec<FrameBuf>>> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut frames = Vec::new();
    link.poll_recv(&mut cx, &mut frames, 64).map_ok(|()| frames)
}

fn discover_frame() -> Vec<u8> {
    udp_frame(MAC, [0xff; 6], Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, (68, 67), &hex(UDHCPC_DISCOVER))
}

/// An ARP request from the guest (10.0.2.100 at `MAC`) for `target`.
fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[10, 0, 2, 100]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

#[tokio::test(start_paused = true)]
async fn the_link_answers_dhcp_rs_and_arp_for_dns_and_passes_the_rest_untouched() {
    let config = UsernetConfig::new();
    let (mut link, mem) = new_link(&config);
    // Nothing from the guest yet: the first advertisement goes out as the link starts.
    assert!(recv(&mut link).is_pending());
    let ra = RouterAdvertiser::new(&config, GW_MAC);
    assert_eq!(mem.sent(), vec![ra.advertisement()]);

    let dns_query = udp_frame(MAC, GW_MAC, [10, 0, 2, 100].into(), [10, 0, 2, 3].into(), (5353, 53), b"query");
    let arp_gateway = arp_request([10, 0, 2, 2]);
    // UDP to port 67 of another host is forwarded like any datagram.
    let elsewhere = udp_frame(MAC, GW_MAC, [10, 0, 2, 100].into(), [192, 0, 2, 1].into(), (68, 67), b"x");
    let rs = solicitation("fe80::5054:ff:fe12:3456", 255);
    mem.push(discover_frame());
    let p1 = mem.push(dns_query.clone());
    mem.push(arp_request([10, 0, 2, 3]));
    let p2 = mem.push(arp_gateway.clone());
    mem.push(rs.clone());
    let p3 = mem.push(elsewhere.clone());
    let Poll::Ready(Ok(frames)) = recv(&mut link) else { panic!("the stack's frames") };
    // The stack's frames, in order, in the buffers they came in (no copy).
    let got: Vec<(&[u8], *const u8)> = frames.iter().map(|f| (&f[..], f.as_ptr())).collect();
    assert_eq!(got, vec![(&dns_query[..], p1), (&arp_gateway[..], p2), (&elsewhere[..], p3)]);

    let offer = match DhcpServer::new(&config).handle_frame(std::time::Instant::now(), &discover_frame(), GW_MAC) {
        DhcpFrame::Reply(offer) => offer,
        other => panic!("{other:?}"),
    };
    let mut arp_reply = hex("5254 0012 3456 5255 0a00 0202 0806 0001 0800 0604 0002");
    arp_reply.extend_from_slice(&hex("5255 0a00 0202 0a00 0203 5254 0012 3456 0a00 0264"));
    let ra_reply = ra.handle_frame(&rs).unwrap();
    let sent = mem.sent();
    assert_eq!(sent[1..], [offer, arp_reply, ra_reply]);
}

#[tokio::test(start_paused = true)]
async fn answers_go_in_one_batch_with_the_stacks_frames_and_the_link_waits_for_the_device() {
    let (mut link, mem) = new_link(&UsernetConfig::new());
    mem.0.lock().unwrap().blocked = true;
    mem.push(discover_frame());
    mem.push(arp_request([10, 0, 2, 3]));
    // Every frame was the link's: nothing for the stack, and no empty "ready".
    assert!(recv(&mut link).is_pending());
    assert!(mem.sent().is_empty(), "the device takes nothing while blocked");
    mem.0.lock().unwrap().blocked = false;
    let mut cx = Context::from_waker(Waker::noop());
    let mut tx = VecDeque::from([FrameBuf::from_vec(b"the stack's frame".to_vec())]);
    assert!(link.poll_send_batch(&mut cx, &mut tx).is_ready());
    let batches = mem.0.lock().unwrap().batches.clone();
    assert_eq!(batches.len(), 1, "one batch");
    let lens: Vec<usize> = batches[0].iter().map(Vec::len).collect();
    assert_eq!(lens.len(), 4, "the advertisement, the offer, the ARP reply, the stack's frame");
    assert_eq!(batches[0][0][54], 134, "the advertisement first");
    assert_eq!(batches[0][2][12..14], [0x08, 0x06]);
    assert_eq!(batches[0][3], b"the stack's frame");
}

#[tokio::test(start_paused = true)]
async fn advertisements_repeat_and_a_v4_only_network_gets_none() {
    let (mut link, mem) = new_link(&UsernetConfig::new());
    assert!(recv(&mut link).is_pending());
    tokio::time::advance(RA_INTERVAL - Duration::from_secs(1)).await;
    assert!(recv(&mut link).is_pending());
    assert_eq!(mem.sent().len(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(recv(&mut link).is_pending());
    assert_eq!(mem.sent().len(), 2, "the periodic advertisement");

    let mut config = UsernetConfig::new();
    config.network6 = "10.1.0.0/16".parse().unwrap();
    let (mut link, mem) = new_link(&config);
    mem.push(solicitation("fe80::5054:ff:fe12:3456", 255));
    let Poll::Ready(Ok(frames)) = recv(&mut link) else { panic!("the RS goes to the stack") };
    assert_eq!(frames.len(), 1);
    assert!(mem.sent().is_empty());
    // The gateway's own ARP is the stack's; so is the DNS address's when it is the gateway.
    config.dns4 = config.gateway4;
    let (mut link, mem) = new_link(&config);
    assert_eq!(link.dns4(), None);
    mem.push(arp_request([10, 0, 2, 2]));
    assert!(matches!(recv(&mut link), Poll::Ready(Ok(f)) if f.len() == 1));
}

#[tokio::test(start_paused = true)]
async fn the_devices_end_comes_through_after_the_frames_before_it() {
    let (mut link, mem) = new_link(&UsernetConfig::new());
    let dns_query = udp_frame(MAC, GW_MAC, [10, 0, 2, 100].into(), [10, 0, 2, 3].into(), (5353, 53), b"query");
    mem.push(dns_query);
    mem.0.lock().unwrap().end = Some(io::ErrorKind::UnexpectedEof);
    assert!(matches!(recv(&mut link), Poll::Ready(Ok(f)) if f.len() == 1));
    // The link held the end back for the frame and returns it next, even
    // from a device that reports its end only once.
    mem.0.lock().unwrap().end = None;
    let Poll::Ready(Err(e)) = recv(&mut link) else { panic!("the end") };
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    // Runts and odd ethertypes are the stack's to drop.
    let (mut link, mem) = new_link(&UsernetConfig::new());
    mem.push(vec![0x08; 13]);
    mem.push(vec![0x08; 20]);
    mem.push(hex("ffff ffff ffff 5254 0012 3456 0806 0001"));
    assert!(matches!(recv(&mut link), Poll::Ready(Ok(f)) if f.len() == 3));
}

/// A neighbour solicitation from the guest at `src` for `target`, to its
/// solicited-node group.
fn neighbor_solicitation(src: &str, target: &str) -> Vec<u8> {
    let (src, target): (Ipv6Addr, Ipv6Addr) = (src.parse().unwrap(), target.parse().unwrap());
    let t = target.octets();
    let mut f = vec![0x33, 0x33, 0xff, t[13], t[14], t[15]];
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&hex("86dd 6000 0000 0020 3aff"));
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15]]);
    f.extend_from_slice(&hex("8700 0000 0000 0000"));
    f.extend_from_slice(&t);
    f.extend_from_slice(&[1, 1]);
    f.extend_from_slice(&MAC);
    fix_checksum(&mut f);
    f
}

#[tokio::test(start_paused = true)]
async fn neighbour_solicitations_for_the_ipv6_dns_address_are_answered_with_the_gateways_mac() {
    let (mut link, mem) = new_link(&UsernetConfig::new());
    let for_gateway = neighbor_solicitation("fd00::100", "fd00::2");
    let p = mem.push(for_gateway.clone());
    mem.push(neighbor_solicitation("fd00::100", "fd00::3"));
    let mut bad = neighbor_solicitation("fd00::100", "fd00::3");
    bad[14 + 40 + 2] ^= 1;
    mem.push(bad.clone());
    let Poll::Ready(Ok(frames)) = recv(&mut link) else { panic!("the stack's frames") };
    // The gateway's own address is the stack's to answer; a bad checksum is the stack's to drop.
    let got: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    assert_eq!(got, vec![&for_gateway[..], &bad[..]]);
    assert_eq!(frames[0].as_ptr(), p);
    let sent = mem.sent();
    assert_eq!(sent.len(), 2, "the first advertisement and one neighbour advertisement");
    let na = &sent[1];
    // Ethernet: to the guest, from the gateway's MAC; IPv6 fd00::3 -> fd00::100, hop limit 255.
    assert_eq!((&na[..6], &na[6..12], &na[12..14]), (&MAC[..], &GW_MAC[..], &[0x86, 0xdd][..]));
    let ip: (Ipv6Addr, Ipv6Addr) = ("fd00::3".parse().unwrap(), "fd00::100".parse().unwrap());
    assert_eq!((&na[22..38], &na[38..54], na[21]), (&ip.0.octets()[..], &ip.1.octets()[..], 255));
    // A neighbour advertisement, solicited and override, for fd00::3 at the gateway's MAC.
    assert_eq!((na[54], na[58]), (136, 0x60));
    assert_eq!(na[62..78], ip.0.octets());
    assert_eq!((na[78], na[79], &na[80..86]), (2, 1, &GW_MAC[..]));
    let mut check = na.clone();
    fix_checksum(&mut check);
    assert_eq!(&check, na, "a valid ICMPv6 checksum");
    // Duplicate address detection (from ::) is answered to all nodes.
    mem.push(neighbor_solicitation("::", "fd00::3"));
    assert!(recv(&mut link).is_pending());
    let dad = mem.sent().pop().unwrap();
    assert_eq!((&dad[..6], dad[58]), (&[0x33, 0x33, 0, 0, 0, 1][..], 0x20));
}
