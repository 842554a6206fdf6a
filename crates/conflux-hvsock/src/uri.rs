//! The endpoint URIs of this crate's schemes (spec/uri.md): `vsock`,
//! `hvsock`, `fc-vsock`, `hyperkit`, `unix`, with the stream modifiers.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::addr::{Guid, HvsockAddr, HybridAddr, HyperkitAddr, VsockAddr};

/// The schemes this crate parses.
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

/// A parsed endpoint URI with its modifiers.
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

/// Which part of a URI is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UriPart {
    /// The scheme (unknown, or missing `://`).
    Scheme,
    /// The host: a CID, a VM GUID or name.
    Host,
    /// The port, or a service GUID.
    Port,
    /// The path.
    Path,
    /// A query parameter.
    Query,
}

impl fmt::Display for UriPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UriPart::Scheme => "scheme",
            UriPart::Host => "host",
            UriPart::Port => "port",
            UriPart::Path => "path",
            UriPart::Query => "query",
        })
    }
}

/// A URI that does not parse; names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {part} in {uri:?}: {reason}")]
pub struct UriError {
    uri: String,
    part: UriPart,
    reason: String,
}

impl UriError {
    /// The part that is wrong.
    pub fn part(&self) -> UriPart {
        self.part
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "us" => Some(Duration::from_micros(n)),
        _ => None,
    }
}

fn print_duration(d: Duration) -> String {
    if d.subsec_nanos() % 1000 != 0 || (d.as_micros() % 1000 != 0) {
        format!("{}us", d.as_micros())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl FromStr for HvUri {
    type Err = UriError;

    fn from_str(uri: &str) -> Result<HvUri, UriError> {
        let err = |part, reason: String| UriError { uri: uri.to_owned(), part, reason };
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Err(err(UriPart::Scheme, "expected <scheme>://".into()));
        };
        let (scheme, listen) = match scheme.strip_suffix("-listen") {
            Some(s) => (s, true),
            None => (scheme, false),
        };
        let (body, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut framed = false;
        let mut connect_timeout = None;
        let mut port_param = None;
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "framing" if v == "shutdown" => framed = true,
                "framing" => return Err(err(UriPart::Query, format!("framing={v}: the only framing is `shutdown`"))),
                "connect_timeout" => {
                    connect_timeout = Some(parse_duration(v).ok_or_else(|| {
                        err(UriPart::Query, format!("connect_timeout={v}: expected a duration like 300ms or 2s"))
                    })?)
                }
                "port" if scheme == "fc-vsock" => {
                    port_param = Some(v.parse::<u32>().map_err(|_| err(UriPart::Port, format!("{v:?} is not a port")))?)
                }
                _ => return Err(err(UriPart::Query, format!("unknown or unsupported key {k:?} for {scheme}"))),
            }
        }
        let port = |p: &str| {
            p.parse::<u32>().map_err(|_| err(UriPart::Port, format!("{p:?} is not a number in 0..=4294967295")))
        };
        let addr = match scheme {
            "vsock" => {
                let hostport = body.strip_suffix('/').unwrap_or(body);
                let (host, p) =
                    hostport.rsplit_once(':').ok_or_else(|| err(UriPart::Port, "expected <cid>:<port>".into()))?;
                let cid = match host {
                    "" | "any" => VsockAddr::CID_ANY,
                    "host" => VsockAddr::CID_HOST,
                    "local" => VsockAddr::CID_LOCAL,
                    "hypervisor" => VsockAddr::CID_HYPERVISOR,
                    h => h.parse().map_err(|_| err(UriPart::Host, format!("{h:?} is not a CID or a CID name")))?,
                };
                let port = if p == "any" { VsockAddr::PORT_ANY } else { port(p)? };
                UriAddr::Vsock(VsockAddr::new(cid, port))
            }
            "hvsock" => {
                let (vm, svc) =
                    body.split_once('/').ok_or_else(|| err(UriPart::Port, "expected <vm>/<service>".into()))?;
                let vm_id = match vm.to_ascii_lowercase().as_str() {
                    "" | "wildcard" => Guid::WILDCARD,
                    "loopback" => Guid::LOOPBACK,
                    "parent" => Guid::PARENT,
                    "children" => Guid::CHILDREN,
                    "broadcast" => Guid::BROADCAST,
                    "silohost" => Guid::SILOHOST,
                    _ => vm.parse().map_err(|e: crate::addr::GuidError| err(UriPart::Host, e.to_string()))?,
                };
                let svc = svc.strip_suffix('/').unwrap_or(svc);
                let service_id = if !svc.is_empty() && svc.bytes().all(|b| b.is_ascii_digit()) {
                    Guid::from_vsock_port(port(svc)?)
                } else {
                    svc.parse().map_err(|e: crate::addr::GuidError| err(UriPart::Port, e.to_string()))?
                };
                UriAddr::Hvsock(HvsockAddr::new(vm_id, service_id))
            }
            "fc-vsock" => {
                if !body.starts_with('/') || body.len() < 2 {
                    return Err(err(UriPart::Path, "expected an absolute path to the VMM's socket".into()));
                }
                let port = port_param.ok_or_else(|| err(UriPart::Port, "missing ?port=N".into()))?;
                UriAddr::FcVsock(HybridAddr::new(body, port))
            }
            "hyperkit" => {
                let rest = body.strip_prefix(':').ok_or_else(|| err(UriPart::Port, "expected :<port>/<dir>".into()))?;
                let (p, dir) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
                if dir.len() < 2 {
                    return Err(err(UriPart::Path, "expected the hyperkit directory after the port".into()));
                }
                UriAddr::Hyperkit(HyperkitAddr::new(dir, port(p)?))
            }
            "unix" => {
                if !body.starts_with('/') || body.len() < 2 {
                    return Err(err(UriPart::Path, "expected an absolute path".into()));
                }
                UriAddr::Unix(PathBuf::from(body))
            }
            other => {
                return Err(err(UriPart::Scheme, format!("unknown scheme {other:?}; known: {}", SCHEMES.join(", "))));
            }
        };
        Ok(HvUri { addr, framed, connect_timeout, listen })
    }
}

impl fmt::Display for HvUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = if self.listen { "-listen" } else { "" };
        let mut query: Vec<String> = Vec::new();
        match &self.addr {
            UriAddr::Vsock(a) => {
                let host = match a.cid {
                    VsockAddr::CID_ANY => String::new(),
                    c => c.to_string(),
                };
                let port = if a.port == VsockAddr::PORT_ANY { "any".to_owned() } else { a.port.to_string() };
                write!(f, "vsock{suffix}://{host}:{port}")?;
            }
            UriAddr::Hvsock(a) => {
                let vm = if a.vm_id == Guid::WILDCARD { String::new() } else { a.vm_id.to_string() };
                write!(f, "hvsock{suffix}://{vm}/{}", a.service_id)?;
            }
            UriAddr::FcVsock(a) => {
                write!(f, "fc-vsock{suffix}://{}", a.path.display())?;
                query.push(format!("port={}", a.port));
            }
            UriAddr::Hyperkit(a) => write!(f, "hyperkit{suffix}://:{}{}", a.port, a.dir.display())?,
            UriAddr::Unix(p) => write!(f, "unix{suffix}://{}", p.display())?,
        }
        if self.framed {
            query.push("framing=shutdown".into());
        }
        if let Some(t) = self.connect_timeout {
            query.push(format!("connect_timeout={}", print_duration(t)));
        }
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
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
            "vsock://3:any",
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
        for (s, part, word) in [
            ("tcp://1.2.3.4:80", UriPart::Scheme, "known: vsock"),
            ("vsock:3:80", UriPart::Scheme, "://"),
            ("vsock://x:80", UriPart::Host, "\"x\""),
            ("vsock://3:http", UriPart::Port, "\"http\""),
            ("vsock://3:99999999999", UriPart::Port, "99999999999"),
            ("vsock://3", UriPart::Port, "cid"),
            ("hvsock://nonsense/80", UriPart::Host, "5 groups"),
            ("hvsock:///zz", UriPart::Port, "GUID"),
            ("fc-vsock://rel/path?port=1", UriPart::Path, "absolute"),
            ("fc-vsock:///v.sock", UriPart::Port, "port=N"),
            ("fc-vsock:///v.sock?port=x", UriPart::Port, "\"x\""),
            ("hyperkit://:80", UriPart::Path, "directory"),
            ("unix://relative", UriPart::Path, "absolute"),
            ("vsock://:80?framing=tls", UriPart::Query, "framing=tls"),
            ("vsock://:80?keepalive=1,2,3", UriPart::Query, "keepalive"),
            ("vsock://:80?connect_timeout=soon", UriPart::Query, "connect_timeout"),
        ] {
            let e = s.parse::<HvUri>().unwrap_err();
            assert_eq!(e.part(), part, "{s}: {e}");
            assert!(e.to_string().contains(word), "{s}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(print_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(print_duration(Duration::from_micros(1)), "1us");
    }
}
