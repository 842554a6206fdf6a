//! A VM guest's link: [`GuestLink`], the frame device in front of the stack
//! that gives the guest its addresses (DHCPv4, router advertisements) and
//! answers ARP for the DNS address; and [`DeviceEnded`], why a forwarder's
//! device ended (its stack's [`DeviceError`](conflux_netstack::DeviceError)).
//! The guest's flows need no watch of their own: the stack fails them
//! itself once its device ended.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use conflux_netstack::{DeviceCaps, FrameBuf, FrameDevice, FramePool};

use crate::dhcp::{DhcpFrame, DhcpServer};
use crate::ra::{RouterAdvertiser, neighbor_advert_for};
use crate::{DHCP_SERVER_PORT, UsernetConfig};

/// How often an unsolicited router advertisement goes out after the first
/// (RFC 4861's default MaxRtrAdvInterval).
pub const RA_INTERVAL: Duration = Duration::from_secs(600);

const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
/// An Ethernet header plus an ARP packet for IPv4 over Ethernet.
const ARP_FRAME_LEN: usize = 14 + 28;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const ROUTER_SOLICITATION: u8 = 133;
const NEIGHBOR_SOLICITATION: u8 = 135;

/// Why a guest's device ended: its error's kind and text.
///
/// The kinds a [`StreamDevice`](crate::StreamDevice) ends with:
/// `UnexpectedEof` (the peer vanished inside a frame), `ConnectionAborted`
/// (it closed the stream between two frames), `InvalidData` (a zero or
/// oversize length), or the flow's own error's kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guest device ended: {message}")]
pub struct DeviceEnded {
    /// The device error's kind.
    pub kind: io::ErrorKind,
    /// The device error's text (for a stream device, its
    /// [`StreamDeviceError`](crate::StreamDeviceError)'s).
    pub message: String,
}

impl From<conflux_netstack::DeviceError> for DeviceEnded {
    fn from(e: conflux_netstack::DeviceError) -> DeviceEnded {
        DeviceEnded { kind: e.kind, message: e.message }
    }
}

/// The frame device in front of a VM guest's stack: it answers, from the
/// gateway's MAC and addresses,
/// - DHCPv4 (a [`DhcpServer`] of the config's IPv4 network: the guest's
///   address, the gateway as router, the DNS address, the MTU);
/// - router solicitations (a [`RouterAdvertiser`] of the config's IPv6
///   network: the /64 for SLAAC, the gateway as default router, the DNS
///   address as RDNSS), and sends
///   an unsolicited advertisement when the link starts and every
///   [`RA_INTERVAL`] after;
/// - ARP requests for the DNS address (10.0.2.3), and neighbour
///   solicitations for the IPv6 one (fd00::3), with the gateway's MAC: the
///   DNS address is not the stack's own, but its frames must reach the
///   stack, whose intercepts forward DNS to the upstream;
///
/// and hands every other frame to the stack as it came (no copy; the
/// checks read the ethertype, the IP protocol, the UDP port and the
/// ICMPv6 type at fixed offsets before anything is parsed). Its answers go
/// out through the wrapped device's send path, in one batch with the
/// stack's frames.
///
/// An error of the wrapped device (its end) is returned as it came.
///
/// ```
/// use conflux_netstack::{LinkConfig, link_pair};
/// use conflux_usernet::{GATEWAY_MAC, GuestLink, UsernetConfig};
///
/// let (ours, _vm) = link_pair(LinkConfig::ethernet());
/// let link = GuestLink::new(&UsernetConfig::new(), GATEWAY_MAC, ours);
/// assert_eq!(link.dns4(), Some("10.0.2.3".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct GuestLink<D> {
    inner: D,
    mac: [u8; 6],
    dns4: Option<Ipv4Addr>,
    dns6: Option<Ipv6Addr>,
    dhcp: Option<DhcpServer>,
    ra: Option<RouterAdvertiser>,
    /// The next unsolicited advertisement (made on the first poll, inside
    /// the driver's runtime).
    next_ra: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Answers not yet taken by the wrapped device.
    replies: VecDeque<FrameBuf>,
    /// The wrapped device's end, held back while frames received before it
    /// went up: returned by the next receive.
    end: Option<io::Error>,
}

impl<D> fmt::Debug for GuestLink<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestLink")
            .field("dns4", &self.dns4)
            .field("dhcp", &self.dhcp.is_some())
            .field("ra", &self.ra.is_some())
            .field("replies", &self.replies.len())
            .finish_non_exhaustive()
    }
}

impl<D: FrameDevice> GuestLink<D> {
    /// The link of `config`'s guest network in front of `device`, answering
    /// from `gateway_mac` (the stack's MAC: [`GATEWAY_MAC`](crate::GATEWAY_MAC)
    /// in front of a [`Usernet`](crate::Usernet)'s stack). DHCP and ARP for the DNS
    /// address only when the config has an IPv4 network, advertisements
    /// only when it has an IPv6 one.
    pub fn new(config: &UsernetConfig, gateway_mac: [u8; 6], device: D) -> GuestLink<D> {
        let v4 = config.network4.addr().is_ipv4();
        let v6 = config.network6.addr().is_ipv6();
        let mut link = GuestLink {
            inner: device,
            mac: gateway_mac,
            // The stack answers for its own address.
            dns4: (v4 && config.dns4 != config.gateway4).then_some(config.dns4),
            dns6: (v6 && config.dns6 != config.gateway6).then_some(config.dns6),
            dhcp: v4.then(|| DhcpServer::new(config)),
            ra: v6.then(|| RouterAdvertiser::new(config, gateway_mac)),
            next_ra: None,
            replies: VecDeque::new(),
            end: None,
        };
        // The first advertisement as the link starts.
        if let Some(ra) = &link.ra {
            let frame = ra.advertisement();
            link.queue(frame);
        }
        link
    }

    /// The address ARP is answered for (`None` without IPv4, or when it
    /// is the gateway's own).
    pub fn dns4(&self) -> Option<Ipv4Addr> {
        self.dns4
    }

    /// What the frame asks of the link: `Some(answer)` when the link
    /// consumes it (the answer may be empty: a DHCP message that needs
    /// none), `None` when it is the stack's.
    fn answer(&mut self, frame: &[u8]) -> Option<Option<Vec<u8>>> {
        let ethertype = frame.get(12..14)?;
        if ethertype == ETHERTYPE_IPV4 {
            let dhcp = self.dhcp.as_mut()?;
            if !is_udp_to_port(frame, DHCP_SERVER_PORT) {
                return None;
            }
            match dhcp.handle_frame(std::time::Instant::now(), frame, self.mac) {
                DhcpFrame::NotDhcp => None,
                DhcpFrame::Reply(reply) => Some(Some(reply)),
                DhcpFrame::NoReply | DhcpFrame::Failed(_) => Some(None),
            }
        } else if ethertype == ETHERTYPE_ARP {
            let dns = self.dns4?;
            arp_request_for(frame, dns).then(|| Some(arp_reply(frame, self.mac)))
        } else if ethertype == ETHERTYPE_IPV6 {
            if frame.get(20) != Some(&IPPROTO_ICMPV6) {
                return None;
            }
            match *frame.get(54)? {
                ROUTER_SOLICITATION => self.ra.as_ref()?.handle_frame(frame).map(Some),
                // The target address at 62..78, before anything is parsed.
                NEIGHBOR_SOLICITATION => {
                    let dns = self.dns6?;
                    if frame.get(62..78)? != dns.octets() {
                        return None;
                    }
                    neighbor_advert_for(frame, dns, self.mac).map(Some)
                }
                _ => None,
            }
        } else {
            None
        }
    }

    /// Queues an answer, its buffer as built (an answer is made once, in a
    /// buffer of its own: no copy into a pool frame).
    fn queue(&mut self, bytes: Vec<u8>) {
        self.replies.push_back(FrameBuf::from_vec(bytes));
    }

    /// Queues an advertisement when one is due.
    fn poll_advertise(&mut self, cx: &mut Context<'_>) {
        let Some(ra) = &self.ra else { return };
        let sleep = self.next_ra.get_or_insert_with(|| Box::pin(tokio::time::sleep(RA_INTERVAL)));
        if sleep.as_mut().poll(cx).is_ready() {
            let frame = ra.advertisement();
            let next = tokio::time::Instant::now() + RA_INTERVAL;
            sleep.as_mut().reset(next);
            // Registers the waker for the next one.
            let _ = sleep.as_mut().poll(cx);
            self.queue(frame);
        }
    }

    /// Hands the queued answers to the wrapped device (its waker registered
    /// when it cannot take them all).
    fn poll_replies(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.replies.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_send_batch(cx, &mut self.replies)
    }
}

impl<D: FrameDevice> FrameDevice for GuestLink<D> {
    fn caps(&self) -> DeviceCaps {
        self.inner.caps()
    }

    fn set_pool(&mut self, pool: FramePool) {
        self.inner.set_pool(pool);
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        if let Some(e) = self.end.take() {
            return Poll::Ready(Err(e));
        }
        self.poll_advertise(cx);
        let start = frames.len();
        loop {
            if let Poll::Ready(Err(e)) = self.poll_replies(cx) {
                return Poll::Ready(Err(e));
            }
            let got = frames.len() - start;
            match self.inner.poll_recv(cx, frames, max - got) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) if got > 0 => {
                    // What came before the end goes up first; the end next time.
                    self.end = Some(e);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if got > 0 => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
            // The link's frames out, the stack's left in place, in order.
            let mut i = start + got;
            while i < frames.len() {
                match self.answer(&frames[i]) {
                    None => i += 1,
                    Some(answer) => {
                        frames.remove(i);
                        if let Some(bytes) = answer {
                            self.queue(bytes);
                        }
                    }
                }
            }
            if frames.len() - start == max {
                return Poll::Ready(Ok(()));
            }
        }
    }

    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_replies(cx) {
            Poll::Ready(Ok(())) => self.inner.poll_send_ready(cx),
            other => other,
        }
    }

    fn send(&mut self, frame: FrameBuf) -> io::Result<()> {
        self.inner.send(frame)
    }

    fn poll_send_batch(&mut self, cx: &mut Context<'_>, frames: &mut VecDeque<FrameBuf>) -> Poll<io::Result<()>> {
        // Our answers first, in the same batch as the stack's frames.
        while let Some(reply) = self.replies.pop_back() {
            frames.push_front(reply);
        }
        self.inner.poll_send_batch(cx, frames)
    }
}

/// Whether `frame` (Ethernet, IPv4) is an unfragmented UDP datagram to
/// `port`, read at fixed offsets.
fn is_udp_to_port(frame: &[u8], port: u16) -> bool {
    let Some(&vihl) = frame.get(14) else { return false };
    if vihl >> 4 != 4 || frame.get(23) != Some(&IPPROTO_UDP) {
        return false;
    }
    // A later fragment has no UDP header.
    let Some(frag) = frame.get(20..22) else { return false };
    if u16::from_be_bytes([frag[0], frag[1]]) & 0x1fff != 0 {
        return false;
    }
    let udp = 14 + usize::from(vihl & 0x0f) * 4;
    frame.get(udp + 2..udp + 4) == Some(&port.to_be_bytes()[..])
}

/// Whether `frame` is an ARP request (IPv4 over Ethernet) for `target`.
fn arp_request_for(frame: &[u8], target: Ipv4Addr) -> bool {
    frame.len() >= ARP_FRAME_LEN && frame[14..22] == [0, 1, 8, 0, 6, 4, 0, 1] && frame[38..42] == target.octets()
}

/// The reply to the ARP request `req`: its target address is at `mac`.
fn arp_reply(req: &[u8], mac: [u8; 6]) -> Vec<u8> {
    let (sender_mac, sender_ip, target_ip) = (&req[22..28], &req[28..32], &req[38..42]);
    let mut frame = Vec::with_capacity(ARP_FRAME_LEN);
    frame.extend_from_slice(sender_mac);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETHERTYPE_ARP);
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(target_ip);
    frame.extend_from_slice(sender_mac);
    frame.extend_from_slice(sender_ip);
    frame
}

#[cfg(test)]
mod tests;
