//! AF_VSOCK and AF_HYPERV addresses, and GUIDs in Windows byte order.
//!
//! Plain code, compiled and tested on every platform; only the socket layer
//! that uses it is platform-specific.

use std::fmt;
use std::path::PathBuf;

use conflux_uri::Guid;

use crate::uri::UriAddr;

/// An AF_VSOCK address: a context id (CID) and a port.
///
/// ```
/// use conflux_hvsock::VsockAddr;
/// let a = VsockAddr::new(VsockAddr::CID_LOCAL, 5000);
/// assert_eq!(a.to_string(), "vsock://1:5000");
/// assert_eq!(VsockAddr::any(80).to_string(), "vsock://:80");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VsockAddr {
    /// The context id.
    pub cid: u32,
    /// The port.
    pub port: u32,
}

impl VsockAddr {
    /// `VMADDR_CID_ANY`: bind to whatever CID this machine has.
    pub const CID_ANY: u32 = 0xFFFF_FFFF;
    /// `VMADDR_CID_HYPERVISOR`.
    pub const CID_HYPERVISOR: u32 = 0;
    /// `VMADDR_CID_LOCAL`: loopback (needs the `vsock_loopback` transport).
    pub const CID_LOCAL: u32 = 1;
    /// `VMADDR_CID_HOST`.
    pub const CID_HOST: u32 = 2;
    /// `VMADDR_PORT_ANY`: let the kernel pick a port.
    pub const PORT_ANY: u32 = 0xFFFF_FFFF;
    /// The address family number on Linux.
    pub const AF_VSOCK: u16 = 40;

    /// `cid:port`.
    pub fn new(cid: u32, port: u32) -> VsockAddr {
        VsockAddr { cid, port }
    }

    /// Any CID, `port`.
    pub fn any(port: u32) -> VsockAddr {
        VsockAddr { cid: Self::CID_ANY, port }
    }

    /// The 16-byte `struct sockaddr_vm` (native byte order, as the kernel reads it).
    pub fn to_sockaddr_vm(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&Self::AF_VSOCK.to_ne_bytes());
        b[4..8].copy_from_slice(&self.port.to_ne_bytes());
        b[8..12].copy_from_slice(&self.cid.to_ne_bytes());
        b
    }
}

impl fmt::Display for VsockAddr {
    /// The endpoint's URI, printed by the workspace's one URI printer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::uri::fmt_addr(UriAddr::Vsock(*self), f)
    }
}

/// An AF_HYPERV address: a VM id and a service id.
///
/// ```
/// use conflux_hvsock::HvsockAddr;
/// use conflux_uri::Guid;
/// let a = HvsockAddr::new(Guid::LOOPBACK, Guid::from_vsock_port(80));
/// assert_eq!(a.to_sockaddr_hv().len(), 36);
/// assert_eq!(a.to_string(), "hvsock://e0e16197-dd56-4a10-9195-5ee7a155a838/00000050-facb-11e6-bd58-64006a7986d3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HvsockAddr {
    /// The partition (VM) id; [`Guid::WILDCARD`] for any.
    pub vm_id: Guid,
    /// The service id.
    pub service_id: Guid,
}

impl HvsockAddr {
    /// The address family number on Windows.
    pub const AF_HYPERV: u16 = 34;
    /// `HV_PROTOCOL_RAW`.
    pub const HV_PROTOCOL_RAW: i32 = 1;
    /// `HVSOCKET_CONNECT_TIMEOUT` (level `HV_PROTOCOL_RAW`, a u32 of milliseconds).
    pub const HVSOCKET_CONNECT_TIMEOUT: i32 = 1;

    /// `vm_id` / `service_id`.
    pub fn new(vm_id: Guid, service_id: Guid) -> HvsockAddr {
        HvsockAddr { vm_id, service_id }
    }

    /// The 36-byte `SOCKADDR_HV`: family u16 LE, reserved u16, VmId, ServiceId.
    pub fn to_sockaddr_hv(&self) -> [u8; 36] {
        let mut b = [0u8; 36];
        b[0..2].copy_from_slice(&Self::AF_HYPERV.to_le_bytes());
        b[4..20].copy_from_slice(&self.vm_id.to_bytes());
        b[20..36].copy_from_slice(&self.service_id.to_bytes());
        b
    }

    /// From a `SOCKADDR_HV`; `None` unless the family is AF_HYPERV.
    pub fn from_sockaddr_hv(b: &[u8; 36]) -> Option<HvsockAddr> {
        if u16::from_le_bytes([b[0], b[1]]) != Self::AF_HYPERV {
            return None;
        }
        let g = |at: usize| {
            let mut x = [0u8; 16];
            x.copy_from_slice(&b[at..at + 16]);
            Guid::from_bytes(x)
        };
        Some(HvsockAddr { vm_id: g(4), service_id: g(20) })
    }
}

impl fmt::Display for HvsockAddr {
    /// The endpoint's URI, printed by the workspace's one URI printer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::uri::fmt_addr(UriAddr::Hvsock(*self), f)
    }
}

/// A port behind a VMM's hybrid vsock Unix socket (`fc-vsock:///path?port=N`).
///
/// Connecting dials `path` and asks for `port`; listening binds `<path>_<port>`,
/// where the VMM delivers guest-initiated connections to that port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HybridAddr {
    /// The VMM's Unix socket.
    pub path: PathBuf,
    /// The vsock port.
    pub port: u32,
}

impl HybridAddr {
    /// The address of `port` behind `path`.
    pub fn new(path: impl Into<PathBuf>, port: u32) -> HybridAddr {
        HybridAddr { path: path.into(), port }
    }

    /// `<path>_<port>`: where guest-initiated connections to `port` arrive.
    pub fn listen_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!("_{}", self.port));
        PathBuf::from(p)
    }
}

impl fmt::Display for HybridAddr {
    /// The endpoint's URI, printed by the workspace's one URI printer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::uri::fmt_addr(UriAddr::FcVsock(self.clone()), f)
    }
}

/// A hyperkit-style vsock address: `<dir>/connect` to dial, `<dir>/00000002.%08x` to listen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HyperkitAddr {
    /// The hyperkit state directory.
    pub dir: PathBuf,
    /// The guest CID to dial (3 by default; ignored when listening).
    pub cid: u32,
    /// The vsock port.
    pub port: u32,
}

impl HyperkitAddr {
    /// Port `port` of guest CID 3 behind `dir`.
    pub fn new(dir: impl Into<PathBuf>, port: u32) -> HyperkitAddr {
        HyperkitAddr { dir: dir.into(), cid: 3, port }
    }

    /// `<dir>/00000002.<port as %08x>`: where the host listens on `port`.
    pub fn listen_path(&self) -> PathBuf {
        self.dir.join(format!("{:08x}.{:08x}", 2, self.port))
    }

    /// `<dir>/connect`: where the host dials guests.
    pub fn connect_path(&self) -> PathBuf {
        self.dir.join("connect")
    }
}

impl fmt::Display for HyperkitAddr {
    /// The endpoint's URI, printed by the workspace's one URI printer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::uri::fmt_addr(UriAddr::Hyperkit(self.clone()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_guids_print_as_documented() {
        assert_eq!(Guid::WILDCARD.to_string(), "00000000-0000-0000-0000-000000000000");
        assert_eq!(Guid::BROADCAST.to_string(), "ffffffff-ffff-ffff-ffff-ffffffffffff");
        assert_eq!(Guid::CHILDREN.to_string(), "90db8b89-0d35-4f79-8ce9-49ea0ac8b7cd");
        assert_eq!(Guid::LOOPBACK.to_string(), "e0e16197-dd56-4a10-9195-5ee7a155a838");
        assert_eq!(Guid::PARENT.to_string(), "a42e7cda-d03f-480c-9cc2-a4de20abb878");
        assert_eq!(Guid::SILOHOST.to_string(), "36bd0c5c-7276-4223-88ba-7d03b654c568");
        for g in [Guid::WILDCARD, Guid::BROADCAST, Guid::CHILDREN, Guid::LOOPBACK, Guid::PARENT, Guid::SILOHOST] {
            assert_eq!(g.to_string().parse::<Guid>().unwrap(), g);
            assert_eq!(g.to_string().to_uppercase().parse::<Guid>().unwrap(), g);
            assert_eq!(Guid::from_bytes(g.to_bytes()), g);
        }
    }

    #[test]
    fn windows_byte_order() {
        let g: Guid = "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap();
        assert_eq!(
            g.to_bytes(),
            [0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]
        );
    }

    #[test]
    fn vsock_ports_map_to_service_ids() {
        let g: Guid = "00001234-FACB-11E6-BD58-64006A7986D3".parse().unwrap();
        assert_eq!(g.vsock_port(), Some(0x1234));
        assert_eq!(Guid::from_vsock_port(0x1234), g);
        assert_eq!(Guid::LOOPBACK.vsock_port(), None);
    }

    #[test]
    fn bad_guids_say_why() {
        for (text, why) in [
            ("", "5 groups"),
            ("0000000-0000-0000-0000-000000000000", "group 1"),
            ("00000000-0000-0000-0000-00000000000g", "hexadecimal"),
            ("00000000-0000-0000-0000-0000000000000", "group 5"),
            ("+0000000-0000-0000-0000-000000000000", "hexadecimal"),
        ] {
            let e = text.parse::<Guid>().unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        assert!("{e0e16197-dd56-4a10-9195-5ee7a155a838}".parse::<Guid>().is_ok());
    }

    #[test]
    fn sockaddr_layouts() {
        let a = HvsockAddr::new(Guid::PARENT, Guid::from_vsock_port(80));
        let raw = a.to_sockaddr_hv();
        assert_eq!(raw[..4], [34, 0, 0, 0]);
        assert_eq!(raw[4..8], [0xda, 0x7c, 0x2e, 0xa4]);
        assert_eq!(HvsockAddr::from_sockaddr_hv(&raw), Some(a));
        let mut bad = raw;
        bad[0] = 40;
        assert_eq!(HvsockAddr::from_sockaddr_hv(&bad), None);

        let v = VsockAddr::new(3, 5000).to_sockaddr_vm();
        assert_eq!(u16::from_ne_bytes([v[0], v[1]]), 40);
        assert_eq!(u32::from_ne_bytes([v[4], v[5], v[6], v[7]]), 5000);
        assert_eq!(u32::from_ne_bytes([v[8], v[9], v[10], v[11]]), 3);
        assert_eq!(v[12..], [0; 4]);
    }
}
