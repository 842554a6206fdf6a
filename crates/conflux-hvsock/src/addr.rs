//! AF_VSOCK and AF_HYPERV addresses, and GUIDs in Windows byte order.
//!
//! Plain code, compiled and tested on every platform; only the socket layer
//! that uses it is platform-specific.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("vsock://")?;
        if self.cid != Self::CID_ANY {
            write!(f, "{}", self.cid)?;
        }
        f.write_str(":")?;
        if self.port == Self::PORT_ANY { f.write_str("any") } else { write!(f, "{}", self.port) }
    }
}

/// A GUID, as Hyper-V sockets use them.
///
/// Text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (parsed case-insensitively,
/// printed lowercase); bytes in Windows order: `Data1` u32 LE, `Data2` u16 LE,
/// `Data3` u16 LE, then 8 raw bytes.
///
/// ```
/// use conflux_hvsock::Guid;
/// let g: Guid = "E0E16197-DD56-4A10-9195-5EE7A155A838".parse().unwrap();
/// assert_eq!(g, Guid::LOOPBACK);
/// assert_eq!(g.to_bytes()[..4], [0x97, 0x61, 0xe1, 0xe0]);
/// assert_eq!(Guid::from_vsock_port(0x5653).to_string(), "00005653-facb-11e6-bd58-64006a7986d3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid {
    /// The first 32 bits.
    pub data1: u32,
    /// The next 16 bits.
    pub data2: u16,
    /// The next 16 bits.
    pub data3: u16,
    /// The last 64 bits, as written.
    pub data4: [u8; 8],
}

/// A GUID's text is malformed; the message says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid GUID {text:?}: {reason}")]
pub struct GuidError {
    text: String,
    reason: &'static str,
}

impl Guid {
    /// `HV_GUID_WILDCARD` / `HV_GUID_ZERO`: any VM (when listening).
    pub const WILDCARD: Guid = Guid::from_fields(0, 0, 0, [0; 8]);
    /// `HV_GUID_BROADCAST`.
    pub const BROADCAST: Guid = Guid::from_fields(0xffff_ffff, 0xffff, 0xffff, [0xff; 8]);
    /// `HV_GUID_CHILDREN`: every child partition.
    pub const CHILDREN: Guid =
        Guid::from_fields(0x90db_8b89, 0x0d35, 0x4f79, [0x8c, 0xe9, 0x49, 0xea, 0x0a, 0xc8, 0xb7, 0xcd]);
    /// `HV_GUID_LOOPBACK`.
    pub const LOOPBACK: Guid =
        Guid::from_fields(0xe0e1_6197, 0xdd56, 0x4a10, [0x91, 0x95, 0x5e, 0xe7, 0xa1, 0x55, 0xa8, 0x38]);
    /// `HV_GUID_PARENT`: the host, seen from a VM.
    pub const PARENT: Guid =
        Guid::from_fields(0xa42e_7cda, 0xd03f, 0x480c, [0x9c, 0xc2, 0xa4, 0xde, 0x20, 0xab, 0xb8, 0x78]);
    /// `HV_GUID_SILOHOST`.
    pub const SILOHOST: Guid =
        Guid::from_fields(0x36bd_0c5c, 0x7276, 0x4223, [0x88, 0xba, 0x7d, 0x03, 0xb6, 0x54, 0xc5, 0x68]);

    /// The template of service ids that stand for vsock ports: `%08x-facb-11e6-bd58-64006a7986d3`.
    pub const VSOCK_TEMPLATE: Guid =
        Guid::from_fields(0, 0xfacb, 0x11e6, [0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79, 0x86, 0xd3]);

    /// A GUID from its fields.
    pub const fn from_fields(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Guid {
        Guid { data1, data2, data3, data4 }
    }

    /// The service id of vsock port `port`.
    pub const fn from_vsock_port(port: u32) -> Guid {
        Guid { data1: port, ..Guid::VSOCK_TEMPLATE }
    }

    /// The vsock port this service id stands for, if it follows the template.
    pub fn vsock_port(&self) -> Option<u32> {
        (Guid { data1: 0, ..*self } == Guid::VSOCK_TEMPLATE).then_some(self.data1)
    }

    /// The 16 bytes in Windows order.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.data1.to_le_bytes());
        b[4..6].copy_from_slice(&self.data2.to_le_bytes());
        b[6..8].copy_from_slice(&self.data3.to_le_bytes());
        b[8..16].copy_from_slice(&self.data4);
        b
    }

    /// From 16 bytes in Windows order.
    pub fn from_bytes(b: [u8; 16]) -> Guid {
        Guid {
            data1: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            data2: u16::from_le_bytes([b[4], b[5]]),
            data3: u16::from_le_bytes([b[6], b[7]]),
            data4: [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
        }
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

impl FromStr for Guid {
    type Err = GuidError;

    fn from_str(s: &str) -> Result<Guid, GuidError> {
        let err = |reason| GuidError { text: s.to_owned(), reason };
        let t = s.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(s);
        let groups: Vec<&str> = t.split('-').collect();
        if groups.len() != 5 {
            return Err(err("expected 5 groups separated by '-'"));
        }
        let lens = [8, 4, 4, 4, 12];
        for (i, (g, want)) in groups.iter().zip(lens).enumerate() {
            if g.len() != want {
                return Err(err([
                    "group 1 must have 8 digits",
                    "group 2 must have 4 digits",
                    "group 3 must have 4 digits",
                    "group 4 must have 4 digits",
                    "group 5 must have 12 digits",
                ][i]));
            }
            if !g.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err("not a hexadecimal digit"));
            }
        }
        let hex = |g: &str| u64::from_str_radix(g, 16).map_err(|_| err("not a hexadecimal digit"));
        let tail = format!("{}{}", groups[3], groups[4]);
        let mut data4 = [0u8; 8];
        for (i, byte) in data4.iter_mut().enumerate() {
            *byte = hex(&tail[2 * i..2 * i + 2])? as u8;
        }
        Ok(Guid { data1: hex(groups[0])? as u32, data2: hex(groups[1])? as u16, data3: hex(groups[2])? as u16, data4 })
    }
}

/// An AF_HYPERV address: a VM id and a service id.
///
/// ```
/// use conflux_hvsock::{Guid, HvsockAddr};
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.vm_id == Guid::WILDCARD {
            write!(f, "hvsock:///{}", self.service_id)
        } else {
            write!(f, "hvsock://{}/{}", self.vm_id, self.service_id)
        }
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fc-vsock://{}?port={}", self.path.display(), self.port)
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hyperkit://:{}{}", self.port, self.dir.display())
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
