//! The stack as a DHCPv4 client ([`StackConfig::dhcpv4`](crate::StackConfig::dhcpv4)):
//! the lease it holds and the shell's way to wait for it. The protocol is
//! smoltcp's dhcpv4 socket, run by the core (`core/dhcp.rs`).

use std::net::Ipv4Addr;

use tokio::sync::watch;

use crate::core::Core;
use crate::stack::{DeviceError, NetStack};

/// What the stack got from a DHCPv4 server, and now uses: its IPv4
/// address, its default route and the DNS servers offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcpv4Lease {
    /// Our IPv4 address.
    pub address: Ipv4Addr,
    /// The prefix length of the subnet (from the subnet mask option).
    pub prefix: u8,
    /// The router (the default gateway), when the server named one.
    pub router: Option<Ipv4Addr>,
    /// The DNS servers offered (at most 3 kept), in the server's order.
    pub dns_servers: Vec<Ipv4Addr>,
    /// The server that gave the lease.
    pub server: Ipv4Addr,
}

/// Why [`NetStack::wait_dhcpv4_lease`] returned no lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DhcpWaitError {
    /// The stack was built without [`StackConfig::dhcpv4`](crate::StackConfig::dhcpv4).
    #[error("dhcpv4: the stack is not a DHCP client (StackConfig::dhcpv4 not set)")]
    NotEnabled,
    /// The stack's device failed: no lease will come.
    #[error("dhcpv4: no lease: {0}")]
    DeviceFailed(DeviceError),
}

/// The shell's copy of the core's lease, published to waiters.
pub(crate) struct LeaseWatch {
    tx: watch::Sender<Option<Dhcpv4Lease>>,
    generation: u64,
}

impl LeaseWatch {
    pub(crate) fn new() -> LeaseWatch {
        LeaseWatch { tx: watch::Sender::new(None), generation: 0 }
    }

    /// Publishes the core's lease if it changed since the last call.
    pub(crate) fn publish(&mut self, core: &Core) {
        if let Some((generation, lease)) = core.dhcp_lease()
            && generation != self.generation
        {
            self.generation = generation;
            self.tx.send_replace(lease.cloned());
        }
    }

    /// Wakes every waiter (the device failed: each sees it).
    pub(crate) fn wake(&self) {
        self.tx.send_modify(|_| {});
    }
}

impl NetStack {
    /// The DHCPv4 lease the stack holds now: `None` before the first one,
    /// after losing it (expired, not renewed), and on a stack that is not a
    /// DHCP client.
    pub fn dhcpv4_lease(&self) -> Option<Dhcpv4Lease> {
        self.shared().lock().dhcp.tx.borrow().clone()
    }

    /// Waits until the stack holds a DHCPv4 lease and returns it (at once
    /// when it holds one). Without a DHCP server on the link this waits
    /// for ever (the client keeps asking): bound it with a timeout. Fails
    /// at once once the stack's device failed.
    pub async fn wait_dhcpv4_lease(&self) -> Result<Dhcpv4Lease, DhcpWaitError> {
        let mut rx = {
            let st = self.shared().lock();
            if st.core.dhcp_lease().is_none() {
                return Err(DhcpWaitError::NotEnabled);
            }
            st.dhcp.tx.subscribe()
        };
        loop {
            // Checked after subscribing: a failure after this wakes `rx`.
            self.shared().lock().alive().map_err(|e| DhcpWaitError::DeviceFailed(e.clone()))?;
            if let Some(lease) = rx.borrow_and_update().clone() {
                return Ok(lease);
            }
            if rx.changed().await.is_err() {
                // The stack is gone with the sender: nothing more comes.
                std::future::pending::<()>().await;
            }
        }
    }
}
