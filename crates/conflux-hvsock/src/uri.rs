//! This crate's endpoints as URIs: `vsock`, `hvsock`, `fc-vsock`, `hyperkit`
//! and `unix`, with the stream modifiers.
//!
//! Parsing and printing go through the workspace's one URI grammar
//! (`conflux-uri`); this module only maps its typed [`Target`]s onto this
//! crate's addresses and back.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use conflux_uri::{Framing, HvVm, StreamOptions, Target, Uri};
use conflux_uri::{UriError, UriPart};

use conflux_uri::Guid;

use crate::addr::{HvsockAddr, HybridAddr, HyperkitAddr, VsockAddr};

/// The schemes this crate serves.
pub const SCHEMES: &[&str] = &["vsock", "hvsock", "fc-vsock", "hyperkit", "unix"];

/// The address part of an [`HvUri`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UriAddr {
    /// `vsock://cid:port` (Linux AF_VSOCK).
    Vsock(VsockAddr),
    /// `hvsock://vm/service` (Windows AF_HYPERV).
    Hvsock(HvsockAddr),
    /// `fc-vsock:///path?port=N` (Firecracker / Cloud Hypervisor hybrid vsock).
    FcVsock(HybridAddr),
    /// `hyperkit://:port/dir`.
    Hyperkit(HyperkitAddr),
    /// `unix:///path`.
    Unix(PathBuf),
}

/// A parsed endpoint URI of this crate, with its modifiers.
///
/// ```
/// use std::time::Duration;
/// use conflux_hvsock::{HvUri, UriAddr, VsockAddr};
///
/// let uri: HvUri = "vsock://3:5000?framing=shutdown&connect_timeout=300ms".parse().unwrap();
/// assert_eq!(uri.addr, UriAddr::Vsock(VsockAddr::new(3, 5000)));
/// assert!(uri.framed);
/// assert_eq!(uri.connect_timeout, Some(Duration::from_millis(300)));
/// assert_eq!(uri.to_string().parse::<HvUri>().unwrap(), uri);
///
/// let err = "vsock://3:port".parse::<HvUri>().unwrap_err();
/// assert!(err.to_string().contains("port"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HvUri {
    /// Where.
    pub addr: UriAddr,
    /// `framing=shutdown`: the shutdown framing on top.
    pub framed: bool,
    /// `connect_timeout=DURATION`.
    pub connect_timeout: Option<Duration>,
    /// A `-listen` suffix on the scheme: force listening.
    pub listen: bool,
}

/// The GUID of a well-known VM name of an `hvsock` URI (`loopback`, `parent`, ...).
fn well_known_vm(name: &str) -> Option<Guid> {
    Some(match name.to_ascii_lowercase().as_str() {
        "wildcard" | "any" => Guid::WILDCARD,
        "loopback" => Guid::LOOPBACK,
        "parent" => Guid::PARENT,
        "children" => Guid::CHILDREN,
        "broadcast" => Guid::BROADCAST,
        "silohost" => Guid::SILOHOST,
        _ => return None,
    })
}

impl HvUri {
    /// This crate's view of a parsed URI; a scheme or modifier it does not
    /// serve is an error naming that part.
    pub fn from_uri(uri: &Uri) -> Result<HvUri, UriError> {
        let options = uri.options();
        if options.keepalive.is_some() {
            return Err(UriError::new(UriPart::Query, "keepalive", "hypervisor sockets have no keepalive"));
        }
        let addr = match uri.target() {
            Target::Vsock { cid, port } => UriAddr::Vsock(VsockAddr::new(cid.unwrap_or(VsockAddr::CID_ANY), *port)),
            Target::Hvsock { vm, service } => {
                let vm_id = match vm {
                    HvVm::Any => Guid::WILDCARD,
                    HvVm::Guid(g) => *g,
                    HvVm::Name(name) => well_known_vm(name).ok_or_else(|| {
                        UriError::new(UriPart::Host, name, "only well-known VM names (loopback, parent, children, broadcast, silohost) are understood; give the VM's GUID")
                    })?,
                };
                UriAddr::Hvsock(HvsockAddr::new(vm_id, *service))
            }
            Target::FcVsock { path, port } => UriAddr::FcVsock(HybridAddr::new(path.clone(), *port)),
            Target::Hyperkit { port, dir } => UriAddr::Hyperkit(HyperkitAddr::new(dir.clone(), *port)),
            Target::Unix { path } => UriAddr::Unix(path.clone()),
            _ => {
                let scheme = uri.scheme();
                let known = SCHEMES.join(", ");
                return Err(UriError::new(
                    UriPart::Scheme,
                    scheme.as_str(),
                    format!("not a scheme of conflux-hvsock (it serves {known})"),
                ));
            }
        };
        Ok(HvUri {
            addr,
            framed: options.framing == Some(Framing::Shutdown),
            connect_timeout: options.connect_timeout,
            listen: uri.listen(),
        })
    }

    /// The URI of this endpoint.
    pub fn to_uri(&self) -> Uri {
        let target = match &self.addr {
            UriAddr::Vsock(a) => Target::Vsock { cid: (a.cid != VsockAddr::CID_ANY).then_some(a.cid), port: a.port },
            UriAddr::Hvsock(a) => Target::Hvsock {
                vm: if a.vm_id == Guid::WILDCARD { HvVm::Any } else { HvVm::Guid(a.vm_id) },
                service: a.service_id,
            },
            UriAddr::FcVsock(a) => Target::FcVsock { path: a.path.clone(), port: a.port },
            UriAddr::Hyperkit(a) => Target::Hyperkit { port: a.port, dir: a.dir.clone() },
            UriAddr::Unix(path) => Target::Unix { path: path.clone() },
        };
        let options = StreamOptions {
            framing: self.framed.then_some(Framing::Shutdown),
            connect_timeout: self.connect_timeout,
            keepalive: None,
        };
        Uri::new(target).with_listen(self.listen).with_options(options)
    }
}

/// Prints `addr` as a URI without modifiers.
pub(crate) fn fmt_addr(addr: UriAddr, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let uri = HvUri { addr, framed: false, connect_timeout: None, listen: false };
    fmt::Display::fmt(&uri.to_uri(), f)
}

impl FromStr for HvUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<HvUri, UriError> {
        HvUri::from_uri(&s.parse::<Uri>()?)
    }
}

impl fmt::Display for HvUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_uri(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_round_trips() {
        for s in [
            "vsock://:80",
            "vsock://2:80/",
            "vsock://local:5000",
            "vsock-listen://:5000?framing=shutdown",
            "hvsock://e0e16197-dd56-4a10-9195-5ee7a155a838/00005653-facb-11e6-bd58-64006a7986d3",
            "hvsock:///0b95756a-9985-48ad-9470-78e060895be7",
            "hvsock://parent/80",
            "fc-vsock:///srv/vm1/v.sock?port=52",
            "fc-vsock:///srv/vm1/v.sock?port=52&framing=shutdown&connect_timeout=2s",
            "hyperkit://:80/var/run/hk",
            "unix:///run/app.sock?connect_timeout=300ms",
        ] {
            let a: HvUri = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            let printed = a.to_string();
            let b: HvUri = printed.parse().unwrap_or_else(|e| panic!("{printed}: {e}"));
            assert_eq!(a, b, "{s} -> {printed}");
        }
    }

    #[test]
    fn values() {
        let u: HvUri = "vsock://2:80/".parse().unwrap();
        assert_eq!(u.addr, UriAddr::Vsock(VsockAddr::new(2, 80)));
        assert!(!u.framed && !u.listen);
        let u: HvUri = "vsock://:80".parse().unwrap();
        assert_eq!(u.addr, UriAddr::Vsock(VsockAddr::any(80)));
        let u: HvUri = "hvsock://parent/80".parse().unwrap();
        assert_eq!(u.addr, UriAddr::Hvsock(HvsockAddr::new(Guid::PARENT, Guid::from_vsock_port(80))));
        let u: HvUri = "hyperkit://:80/var/run/hk".parse().unwrap();
        assert_eq!(u.addr, UriAddr::Hyperkit(HyperkitAddr::new("/var/run/hk", 80)));
        let u: HvUri = "fc-vsock:///v.sock?port=52".parse().unwrap();
        assert_eq!(u.addr, UriAddr::FcVsock(HybridAddr::new("/v.sock", 52)));
    }

    #[test]
    fn errors_name_the_part() {
        for (s, part) in [
            ("tcp://1.2.3.4:80", UriPart::Scheme),
            ("nope://x", UriPart::Scheme),
            ("vsock://x:80", UriPart::Host),
            ("vsock://3:http", UriPart::Port),
            ("vsock://3:99999999999", UriPart::Port),
            ("hvsock://my-vm/80", UriPart::Host),
            ("fc-vsock://rel/path?port=1", UriPart::Host),
            ("fc-vsock:///v.sock", UriPart::Query),
            ("unix://relative", UriPart::Host),
            ("vsock://:80?framing=tls", UriPart::Query),
            ("vsock://:80?keepalive=1s,2s,3", UriPart::Query),
            ("vsock://:80?connect_timeout=soon", UriPart::Query),
        ] {
            let e = s.parse::<HvUri>().unwrap_err();
            assert_eq!(e.part(), part, "{s}: {e}");
        }
        let e = "tcp://1.2.3.4:80".parse::<HvUri>().unwrap_err();
        assert!(e.to_string().contains("vsock, hvsock"), "the error lists this crate's schemes: {e}");
    }
}
