//! The one endpoint URI grammar of conflux (written out in `docs/uri.md`): typed
//! values for every scheme, a parser whose errors name the wrong part, and a
//! printer such that parse, print, parse gives the same value.
//!
//! Every crate that reads an endpoint URI goes through this parser: the
//! registry (`conflux-mimic`, `Ctx::from_uri`), the transports that turn a
//! [`Target`] into their own address types (`conflux-hvsock`), the CLI and the
//! examples. It knows every scheme of the workspace but depends on none of the
//! transport crates, and it does no I/O (a domain name stays a name).
//!
//! ```
//! use conflux_uri::{Scheme, Target, Uri};
//! let uri: Uri = "fc-vsock:///srv/vm1/v.sock?port=52&framing=shutdown".parse().unwrap();
//! assert_eq!(uri.scheme(), Scheme::FcVsock);
//! assert!(matches!(uri.target(), Target::FcVsock { port: 52, .. }));
//! assert_eq!(uri.to_string().parse::<Uri>().unwrap(), uri);
//! let err = "vsock://3:port".parse::<Uri>().unwrap_err();
//! assert_eq!(err.part(), conflux_uri::UriPart::Port);
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod keepalive;

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A URI scheme of conflux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scheme {
    /// `tcp://host:port`, kernel TCP.
    Tcp,
    /// `tls://host[:port]?sni=NAME&ca=PATH&cert=PATH&key=PATH&over=URI`, TLS over tcp or any stream.
    Tls,
    /// `unix:///abs/path`.
    Unix,
    /// `vsock://cid:port`, Linux AF_VSOCK.
    Vsock,
    /// `hvsock://vm/service`, Windows AF_HYPERV.
    Hvsock,
    /// `fc-vsock:///path?port=N`, Firecracker / Cloud Hypervisor hybrid vsock.
    FcVsock,
    /// `hyperkit://:port/dir`, macOS hyperkit-style Unix paths.
    Hyperkit,
    /// `netstack://device/addr/prefix[:port]?gw=ADDR&mtu=N&dst=ADDR:PORT`, the userspace stack.
    Netstack,
    /// `stdio:`, the process's stdin/stdout.
    Stdio,
}

impl Scheme {
    /// Every scheme, in the order of the spec's table.
    pub const ALL: [Scheme; 9] = [
        Scheme::Tcp,
        Scheme::Tls,
        Scheme::Unix,
        Scheme::Vsock,
        Scheme::Hvsock,
        Scheme::FcVsock,
        Scheme::Hyperkit,
        Scheme::Netstack,
        Scheme::Stdio,
    ];

    /// The scheme as written in URIs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Unix => "unix",
            Scheme::Vsock => "vsock",
            Scheme::Hvsock => "hvsock",
            Scheme::FcVsock => "fc-vsock",
            Scheme::Hyperkit => "hyperkit",
            Scheme::Netstack => "netstack",
            Scheme::Stdio => "stdio",
        }
    }

    /// The port used when a URI of this scheme names none (TLS: 443).
    pub const fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Tls => Some(443),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Scheme, UriError> {
        Scheme::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = Scheme::ALL.iter().map(|k| k.as_str()).collect();
            UriError::new(UriPart::Scheme, s, format!("unknown scheme (known: {})", known.join(", ")))
        })
    }
}

/// Which part of a URI is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UriPart {
    /// The scheme (unknown, or no `scheme:` at all).
    Scheme,
    /// The host (or vsock CID, hvsock VM, netstack device and address).
    Host,
    /// The port (not a number, out of range, missing).
    Port,
    /// The path.
    Path,
    /// A query parameter (unknown key, bad value, duplicate).
    Query,
}

impl fmt::Display for UriPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UriPart::Scheme => "scheme",
            UriPart::Host => "host",
            UriPart::Port => "port",
            UriPart::Path => "path",
            UriPart::Query => "query key",
        })
    }
}

/// How many `tls://…?over=URI` levels may nest: a URI with this many `over=`
/// parses, one more is [`UriErrorKind::TooDeep`].
///
/// Parsing and printing recurse once per level, and each level's `over=`
/// value is percent-encoded once more inside its parent; the bound keeps both
/// small and fast whatever the input (a TLS stream over a TLS stream over a
/// stream is already unusual).
pub const MAX_OVER_DEPTH: usize = 8;

/// What kind of error a [`UriError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UriErrorKind {
    /// A part is malformed, unknown, missing or given twice ([`UriError::part`] says which).
    Invalid,
    /// `over=` nests deeper than `limit` levels ([`MAX_OVER_DEPTH`]).
    TooDeep {
        /// The limit that was passed.
        limit: usize,
    },
}

/// A URI that does not parse; names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {part} `{value}`: {reason}")]
pub struct UriError {
    part: UriPart,
    kind: UriErrorKind,
    value: String,
    reason: String,
}

impl UriError {
    /// An error in `part`, whose text is `value`, for `reason`.
    pub fn new(part: UriPart, value: &str, reason: impl Into<String>) -> UriError {
        UriError { part, kind: UriErrorKind::Invalid, value: value.to_string(), reason: reason.into() }
    }

    fn too_deep() -> UriError {
        UriError {
            part: UriPart::Query,
            kind: UriErrorKind::TooDeep { limit: MAX_OVER_DEPTH },
            value: "over".to_string(),
            reason: format!("nested deeper than {MAX_OVER_DEPTH} levels (the limit of `over=`)"),
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> UriErrorKind {
        self.kind
    }

    /// The wrong part.
    pub fn part(&self) -> UriPart {
        self.part
    }

    /// The text of the wrong part (for a query, the key).
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// A host of `tcp` and `tls`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// Empty: every address (listening only).
    Any,
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A domain name (lowercase, validated).
    Domain(String),
}

/// A GUID, as Hyper-V sockets use them.
///
/// Text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (parsed case-insensitively,
/// printed lowercase); bytes in Windows order: `Data1` u32 LE, `Data2` u16 LE,
/// `Data3` u16 LE, then 8 raw bytes.
///
/// ```
/// use conflux_uri::Guid;
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

/// The VM part of an `hvsock` URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HvVm {
    /// Empty: the wildcard.
    Any,
    /// A VM GUID.
    Guid(Guid),
    /// A VM name.
    Name(String),
}

/// `framing=shutdown`: the hvsock shutdown framing on top of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// The shutdown framing.
    Shutdown,
}

/// `keepalive=AFTER,INTERVAL,PROBES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub after: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub probes: u32,
}

/// Modifiers any stream scheme accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StreamOptions {
    /// `framing=shutdown`.
    pub framing: Option<Framing>,
    /// `connect_timeout=DURATION` (`500ms`, `5s`, `2m`).
    pub connect_timeout: Option<Duration>,
    /// `keepalive=AFTER,INTERVAL,PROBES`.
    pub keepalive: Option<Keepalive>,
}

/// What a URI addresses, one variant per scheme.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// `tcp://host:port`.
    Tcp {
        /// Host (empty = every address, for listening).
        host: Host,
        /// Port.
        port: u16,
    },
    /// `tls://host[:port]?sni=&ca=&cert=&key=&alpn=&over=`.
    Tls {
        /// Host.
        host: Host,
        /// Port, if given (see [`Scheme::default_port`]).
        port: Option<u16>,
        /// `sni=NAME`: the server name to present and verify.
        sni: Option<String>,
        /// `ca=PATH`: a PEM file of trusted roots (connecting: the server's;
        /// listening: the clients', whose certificates are then required).
        ca: Option<PathBuf>,
        /// `cert=PATH`: a PEM file of our certificate chain (listening: the
        /// server's; connecting: a client certificate).
        cert: Option<PathBuf>,
        /// `key=PATH`: a PEM file of the private key of `cert`.
        key: Option<PathBuf>,
        /// `alpn=h2,http/1.1`: the application protocols offered by ALPN, in
        /// order of preference (empty: no ALPN).
        alpn: Vec<String>,
        /// `over=URI`: the stream to run TLS over instead of tcp.
        over: Option<Box<Uri>>,
    },
    /// `unix:///path`.
    Unix {
        /// Absolute path.
        path: PathBuf,
    },
    /// `vsock://cid:port`.
    Vsock {
        /// CID (`None` = any); names `host` = 2, `local` = 1, `hypervisor` = 0.
        cid: Option<u32>,
        /// Port.
        port: u32,
    },
    /// `hvsock://vm/service`.
    Hvsock {
        /// VM.
        vm: HvVm,
        /// Service GUID (a decimal service is a vsock port, see [`Guid::from_vsock_port`]).
        service: Guid,
    },
    /// `fc-vsock:///path?port=N`.
    FcVsock {
        /// The VMM's socket.
        path: PathBuf,
        /// The vsock port.
        port: u32,
    },
    /// `hyperkit://:port/dir`.
    Hyperkit {
        /// The vsock port.
        port: u32,
        /// The directory.
        dir: PathBuf,
    },
    /// `netstack://device/addr/prefix[:port]?gw=&mtu=&dst=`.
    Netstack {
        /// The device: a TAP or TUN interface, or the name of an in-process
        /// stack (1-15 bytes of ASCII letters, digits, `-`, `_`, `.`; not only dots).
        device: String,
        /// Our address.
        addr: IpAddr,
        /// Prefix length.
        prefix: u8,
        /// The service port (listening; port 0 or none picks one).
        port: Option<u16>,
        /// `gw=ADDR`: the default gateway, of `addr`'s family.
        gw: Option<IpAddr>,
        /// `mtu=N`.
        mtu: Option<u16>,
        /// `dst=ADDR:PORT`: where a connect through the stack goes (IPv6 in
        /// brackets, of `addr`'s family, port not 0).
        dst: Option<SocketAddr>,
    },
    /// `stdio:`.
    Stdio,
}

/// A parsed endpoint URI.
///
/// ```
/// use conflux_uri::{Host, Scheme, Target, Uri};
/// let uri: Uri = "tcp://[::1]:80?connect_timeout=5s".parse().unwrap();
/// assert_eq!(uri.scheme(), Scheme::Tcp);
/// assert!(matches!(uri.target(), Target::Tcp { host: Host::Ip(ip), port: 80 } if ip.is_loopback()));
/// assert_eq!(uri.to_string().parse::<Uri>().unwrap(), uri);
/// let err = "tcp://example.test:99999".parse::<Uri>().unwrap_err();
/// assert_eq!(err.to_string(), "invalid port `99999`: out of range (0-65535)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Uri {
    target: Target,
    listen: bool,
    options: StreamOptions,
}

impl Uri {
    /// A URI for `target`, connecting, without modifiers.
    pub fn new(target: Target) -> Uri {
        Uri { target, listen: false, options: StreamOptions::default() }
    }

    /// Forces listening (the `-listen` scheme suffix).
    pub fn with_listen(mut self, listen: bool) -> Uri {
        self.listen = listen;
        self
    }

    /// Sets the stream modifiers.
    pub fn with_options(mut self, options: StreamOptions) -> Uri {
        self.options = options;
        self
    }

    /// What it addresses.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        match self.target {
            Target::Tcp { .. } => Scheme::Tcp,
            Target::Tls { .. } => Scheme::Tls,
            Target::Unix { .. } => Scheme::Unix,
            Target::Vsock { .. } => Scheme::Vsock,
            Target::Hvsock { .. } => Scheme::Hvsock,
            Target::FcVsock { .. } => Scheme::FcVsock,
            Target::Hyperkit { .. } => Scheme::Hyperkit,
            Target::Netstack { .. } => Scheme::Netstack,
            Target::Stdio => Scheme::Stdio,
        }
    }

    /// True when the scheme had the `-listen` suffix.
    pub fn listen(&self) -> bool {
        self.listen
    }

    /// The stream modifiers.
    pub fn options(&self) -> &StreamOptions {
        &self.options
    }

    /// The host of `tcp`/`tls`.
    pub fn host(&self) -> Option<&Host> {
        match &self.target {
            Target::Tcp { host, .. } | Target::Tls { host, .. } => Some(host),
            _ => None,
        }
    }

    /// The port of `tcp`/`tls`/`netstack`, with the scheme's default.
    pub fn port(&self) -> Option<u16> {
        match &self.target {
            Target::Tcp { port, .. } => Some(*port),
            Target::Tls { port, .. } => port.or(Scheme::Tls.default_port()),
            Target::Netstack { port, .. } => *port,
            _ => None,
        }
    }
}

impl FromStr for Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Uri, UriError> {
        parse(s, 0)
    }
}

/// Parses `s`, which is nested `depth` levels deep in `over=` values.
fn parse(s: &str, depth: usize) -> Result<Uri, UriError> {
    let Some((scheme_text, rest)) = s.split_once(':') else {
        return Err(UriError::new(UriPart::Scheme, s, "missing `scheme:`"));
    };
    let (scheme_text, listen) = match scheme_text.strip_suffix("-listen") {
        Some(base) => (base, true),
        None => (scheme_text, false),
    };
    let scheme: Scheme = scheme_text.parse()?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, parse_query(q)?),
        None => (rest, Vec::new()),
    };
    let mut q = Query { pairs: query };
    if scheme == Scheme::Stdio {
        if !(rest.is_empty() || rest == "//") {
            return Err(UriError::new(UriPart::Path, rest, "stdio takes no address"));
        }
        let options = stream_options(&mut q)?;
        q.finish()?;
        return Ok(Uri { target: Target::Stdio, listen, options });
    }
    let Some(body) = rest.strip_prefix("//") else {
        return Err(UriError::new(UriPart::Scheme, s, "expected `://` after the scheme"));
    };
    let (authority, path) = match body.find('/') {
        Some(i) => (&body[..i], &body[i..]),
        None => (body, ""),
    };
    let target = match scheme {
        Scheme::Tcp | Scheme::Tls => {
            no_path(path)?;
            let (host, port) = host_port(authority)?;
            if scheme == Scheme::Tcp {
                let port = port.ok_or_else(|| UriError::new(UriPart::Port, authority, "missing (`host:port`)"))?;
                Target::Tcp { host, port }
            } else {
                let sni = q.take("sni").map(|v| v.to_string());
                let ca = q.take("ca").map(PathBuf::from);
                let cert = q.take("cert").map(PathBuf::from);
                let key = q.take("key").map(PathBuf::from);
                let alpn = match q.take("alpn") {
                    Some(v) => alpn_list(&v)?,
                    None => Vec::new(),
                };
                let over = match q.take("over") {
                    Some(_) if depth >= MAX_OVER_DEPTH => return Err(UriError::too_deep()),
                    Some(v) => Some(Box::new(parse(&v, depth + 1).map_err(|e| match e.kind {
                        UriErrorKind::TooDeep { .. } => e,
                        _ => UriError::new(UriPart::Query, "over", format!("{e}")),
                    })?)),
                    None => None,
                };
                Target::Tls { host, port, sni, ca, cert, key, alpn, over }
            }
        }
        Scheme::Unix => {
            if !authority.is_empty() {
                return Err(UriError::new(UriPart::Host, authority, "unix takes no host (`unix:///abs/path`)"));
            }
            Target::Unix { path: abs_path(path)? }
        }
        Scheme::Vsock => {
            // `vsock://2:80/`, as the hvsock and virtsock tools write it.
            no_path(path.strip_prefix('/').filter(|rest| rest.is_empty()).unwrap_or(path))?;
            let (cid, port) = authority
                .rsplit_once(':')
                .ok_or_else(|| UriError::new(UriPart::Port, authority, "missing (`cid:port`)"))?;
            let cid = match cid {
                "" => None,
                "host" => Some(2),
                "local" => Some(1),
                "hypervisor" => Some(0),
                n => Some(digits(n).and_then(|n| n.parse::<u32>().ok()).ok_or_else(|| {
                    UriError::new(UriPart::Host, n, "not a CID (a number, `host`, `local`, `hypervisor` or empty)")
                })?),
            };
            Target::Vsock { cid, port: number(port)? }
        }
        Scheme::Hvsock => {
            let vm = match authority {
                "" => HvVm::Any,
                a => match a.parse::<Guid>().ok() {
                    Some(g) => HvVm::Guid(g),
                    None if a.contains(':') => return Err(UriError::new(UriPart::Host, a, "not a VM GUID or name")),
                    None => HvVm::Name(a.to_string()),
                },
            };
            let service = path.strip_prefix('/').unwrap_or(path);
            let service = if let Ok(g) = service.parse::<Guid>() {
                g
            } else if let Some(port) = digits(service).and_then(|s| s.parse::<u32>().ok()) {
                Guid::from_vsock_port(port)
            } else {
                return Err(UriError::new(UriPart::Path, path, "not a service GUID or decimal vsock port"));
            };
            Target::Hvsock { vm, service }
        }
        Scheme::FcVsock => {
            if !authority.is_empty() {
                return Err(UriError::new(
                    UriPart::Host,
                    authority,
                    "fc-vsock takes no host (`fc-vsock:///path?port=N`)",
                ));
            }
            let path = abs_path(path)?;
            let port = q.take("port").ok_or_else(|| UriError::new(UriPart::Query, "port", "missing (`?port=N`)"))?;
            Target::FcVsock { path, port: number(&port).map_err(|e| e.in_query("port"))? }
        }
        Scheme::Hyperkit => {
            let port = authority
                .strip_prefix(':')
                .ok_or_else(|| UriError::new(UriPart::Host, authority, "hyperkit takes `:port` and no host"))?;
            Target::Hyperkit { port: number(port)?, dir: abs_path(path)? }
        }
        Scheme::Netstack => {
            if authority.is_empty() {
                return Err(UriError::new(UriPart::Host, authority, "missing device (`netstack://tap0/addr/prefix`)"));
            }
            let name_ok = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
            if authority.len() > 15 || !authority.bytes().all(name_ok) || authority.bytes().all(|b| b == b'.') {
                return Err(UriError::new(
                    UriPart::Host,
                    authority,
                    "not a device name (1-15 bytes of ASCII letters, digits, `-`, `_`, `.`; not only dots)",
                ));
            }
            let spec = path.strip_prefix('/').unwrap_or(path);
            let (addr, tail) = spec
                .rsplit_once('/')
                .ok_or_else(|| UriError::new(UriPart::Path, path, "expected `/addr/prefix[:port]`"))?;
            let (prefix, port) = match tail.split_once(':') {
                Some((p, port)) => (p, Some(number(port)?)),
                None => (tail, None),
            };
            let addr: IpAddr =
                addr.parse().map_err(|_| UriError::new(UriPart::Host, addr, "not an IPv4 or IPv6 address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = digits(prefix)
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| *p <= max)
                .ok_or_else(|| UriError::new(UriPart::Path, prefix, format!("not a prefix length (0-{max})")))?;
            let family = |ip: IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            let same_family = |key: &str, ip: IpAddr| {
                if ip.is_ipv4() == addr.is_ipv4() {
                    Ok(())
                } else {
                    let reason = format!("`{ip}` is {} but the stack's address is {}", family(ip), family(addr));
                    Err(UriError::new(UriPart::Query, key, reason))
                }
            };
            let gw = match q.take("gw") {
                Some(g) => {
                    let gw: IpAddr = g.parse().map_err(|_| UriError::new(UriPart::Query, "gw", "not an IP address"))?;
                    same_family("gw", gw)?;
                    Some(gw)
                }
                None => None,
            };
            let mtu = match q.take("mtu") {
                Some(m) => Some(number(&m).map_err(|e| e.in_query("mtu"))?),
                None => None,
            };
            let dst = match q.take("dst") {
                Some(d) => {
                    let dst: SocketAddr = d.parse().map_err(|_| {
                        UriError::new(
                            UriPart::Query,
                            "dst",
                            format!("`{d}`: not ADDR:PORT (`10.0.0.1:80`, `[fd00::1]:80`)"),
                        )
                    })?;
                    if dst.port() == 0 {
                        return Err(UriError::new(
                            UriPart::Query,
                            "dst",
                            format!("`{d}`: port 0 cannot be connected to"),
                        ));
                    }
                    same_family("dst", dst.ip())?;
                    Some(dst)
                }
                None => None,
            };
            Target::Netstack { device: authority.to_string(), addr, prefix, port, gw, mtu, dst }
        }
        Scheme::Stdio => Target::Stdio,
    };
    let options = stream_options(&mut q)?;
    q.finish()?;
    Ok(Uri { target, listen, options })
}

impl UriError {
    fn in_query(self, key: &str) -> UriError {
        UriError::new(UriPart::Query, key, format!("`{}`: {}", self.value, self.reason))
    }
}

/// `alpn=h2,http/1.1`: protocol names (1 to 255 bytes each, no empty
/// name), in order of preference.
fn alpn_list(v: &str) -> Result<Vec<String>, UriError> {
    v.split(',')
        .map(|name| match name.len() {
            0 => Err(UriError::new(UriPart::Query, "alpn", "an empty protocol name (`alpn=h2,http/1.1`)")),
            1..=255 => Ok(name.to_string()),
            _ => Err(UriError::new(UriPart::Query, "alpn", "a protocol name longer than 255 bytes")),
        })
        .collect()
}

fn no_path(path: &str) -> Result<(), UriError> {
    if path.is_empty() { Ok(()) } else { Err(UriError::new(UriPart::Path, path, "this scheme takes no path")) }
}

fn abs_path(path: &str) -> Result<PathBuf, UriError> {
    if path.len() < 2 || !path.starts_with('/') {
        return Err(UriError::new(UriPart::Path, path, "expected an absolute path"));
    }
    Ok(PathBuf::from(percent_decode(path).map_err(|r| UriError::new(UriPart::Path, path, r))?))
}

/// `s` if it is one or more ASCII digits (`str::parse` also takes a leading `+`).
fn digits(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

fn number<N: FromStr + TryFrom<u64>>(s: &str) -> Result<N, UriError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::new(UriPart::Port, s, "not a number"));
    }
    let max = std::any::type_name::<N>();
    let range = match max {
        "u16" => "0-65535",
        _ => "0-4294967295",
    };
    s.parse::<u64>()
        .ok()
        .and_then(|n| N::try_from(n).ok())
        .ok_or_else(|| UriError::new(UriPart::Port, s, format!("out of range ({range})")))
}

fn host_port(authority: &str) -> Result<(Host, Option<u16>), UriError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (ip6, after) =
            rest.split_once(']').ok_or_else(|| UriError::new(UriPart::Host, authority, "unclosed `[`"))?;
        let ip: Ipv6Addr = ip6.parse().map_err(|_| UriError::new(UriPart::Host, ip6, "not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| UriError::new(UriPart::Port, p, "expected `:port`"))?),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (h, p) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if p.is_some_and(|p| p.contains(':')) {
            return Err(UriError::new(UriPart::Host, authority, "an IPv6 address needs brackets (`[::1]:80`)"));
        }
        (host(h)?, p)
    };
    Ok((host, port.map(number::<u16>).transpose()?))
}

fn host(h: &str) -> Result<Host, UriError> {
    if h.is_empty() {
        return Ok(Host::Any);
    }
    if h.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: Ipv4Addr = h.parse().map_err(|_| UriError::new(UriPart::Host, h, "not an IPv4 address"))?;
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let name = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(UriError::new(UriPart::Host, h, "not an IP address or a domain name"));
    }
    Ok(Host::Domain(name))
}

struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn take(&mut self, key: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(i).1)
    }

    fn finish(self) -> Result<(), UriError> {
        match self.pairs.first() {
            Some((k, _)) => Err(UriError::new(UriPart::Query, k, "unknown for this scheme")),
            None => Ok(()),
        }
    }
}

fn parse_query(q: &str) -> Result<Vec<(String, String)>, UriError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = percent_decode(k).map_err(|r| UriError::new(UriPart::Query, k, r))?;
        let v = percent_decode(v).map_err(|r| UriError::new(UriPart::Query, &k, r))?;
        if pairs.iter().any(|(seen, _)| *seen == k) {
            return Err(UriError::new(UriPart::Query, &k, "given twice"));
        }
        pairs.push((k, v));
    }
    Ok(pairs)
}

fn stream_options(q: &mut Query) -> Result<StreamOptions, UriError> {
    let mut o = StreamOptions::default();
    if let Some(f) = q.take("framing") {
        if f != "shutdown" {
            return Err(UriError::new(UriPart::Query, "framing", format!("`{f}`: the only framing is `shutdown`")));
        }
        o.framing = Some(Framing::Shutdown);
    }
    if let Some(t) = q.take("connect_timeout") {
        o.connect_timeout = Some(duration(&t).map_err(|r| UriError::new(UriPart::Query, "connect_timeout", r))?);
    }
    if let Some(k) = q.take("keepalive") {
        let bad = |r: String| UriError::new(UriPart::Query, "keepalive", r);
        let parts: Vec<&str> = k.split(',').collect();
        let [after, interval, probes] = parts[..] else {
            return Err(bad(format!("`{k}`: expected AFTER,INTERVAL,PROBES")));
        };
        let probes = digits(probes)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| bad(format!("`{probes}`: probes is not a number")))?;
        o.keepalive = Some(Keepalive {
            after: duration(after).map_err(bad)?,
            interval: duration(interval).map_err(bad)?,
            probes,
        });
    }
    Ok(o)
}

/// `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().map_err(|_| format!("`{s}`: not a duration (e.g. 500ms, 5s, 2m)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("`{s}`: unknown unit (ms, s, m, h)")),
    };
    Ok(d)
}

fn print_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated `%` escape")?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("bad `%{hex}` escape"));
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad `%{hex}` escape"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "escapes are not UTF-8".to_string())
}

fn percent_encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn print_host(f: &mut fmt::Formatter<'_>, host: &Host) -> fmt::Result {
    match host {
        Host::Any => Ok(()),
        Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
        Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        Host::Domain(d) => f.write_str(d),
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme();
        write!(f, "{scheme}{}:", if self.listen { "-listen" } else { "" })?;
        let mut query: Vec<(&str, String)> = Vec::new();
        let path_keep = b"/:@,";
        match &self.target {
            Target::Tcp { host, port } => {
                f.write_str("//")?;
                print_host(f, host)?;
                write!(f, ":{port}")?;
            }
            Target::Tls { host, port, sni, ca, cert, key, alpn, over } => {
                f.write_str("//")?;
                print_host(f, host)?;
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                if let Some(s) = sni {
                    query.push(("sni", s.clone()));
                }
                for (k, path) in [("ca", ca), ("cert", cert), ("key", key)] {
                    if let Some(p) = path {
                        query.push((k, p.to_string_lossy().into_owned()));
                    }
                }
                if !alpn.is_empty() {
                    query.push(("alpn", alpn.join(",")));
                }
                if let Some(o) = over {
                    query.push(("over", o.to_string()));
                }
            }
            Target::Unix { path } => write!(f, "//{}", percent_encode(&path.to_string_lossy(), path_keep))?,
            Target::Vsock { cid, port } => match cid {
                Some(c) => write!(f, "//{c}:{port}")?,
                None => write!(f, "//:{port}")?,
            },
            Target::Hvsock { vm, service } => {
                f.write_str("//")?;
                match vm {
                    HvVm::Any => {}
                    HvVm::Guid(g) => write!(f, "{g}")?,
                    HvVm::Name(n) => f.write_str(n)?,
                }
                write!(f, "/{service}")?;
            }
            Target::FcVsock { path, port } => {
                write!(f, "//{}", percent_encode(&path.to_string_lossy(), path_keep))?;
                query.push(("port", port.to_string()));
            }
            Target::Hyperkit { port, dir } => {
                write!(f, "//:{port}{}", percent_encode(&dir.to_string_lossy(), path_keep))?
            }
            Target::Netstack { device, addr, prefix, port, gw, mtu, dst } => {
                write!(f, "//{device}/{addr}/{prefix}")?;
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                if let Some(g) = gw {
                    query.push(("gw", g.to_string()));
                }
                if let Some(m) = mtu {
                    query.push(("mtu", m.to_string()));
                }
                if let Some(d) = dst {
                    query.push(("dst", d.to_string()));
                }
            }
            Target::Stdio => {}
        }
        let o = &self.options;
        if o.framing.is_some() {
            query.push(("framing", "shutdown".into()));
        }
        if let Some(t) = o.connect_timeout {
            query.push(("connect_timeout", print_duration(t)));
        }
        if let Some(k) = o.keepalive {
            query.push((
                "keepalive",
                format!("{},{},{}", print_duration(k.after), print_duration(k.interval), k.probes),
            ));
        }
        // A value ends at the next `&` only (the parser splits the query at
        // `&`, then each pair at its first `=`), so `?` and `=` stay as they
        // are: a nested `over=tcp://h:1?framing=shutdown` prints unescaped,
        // and its length does not grow with each level of nesting.
        for (i, (k, v)) in query.iter().enumerate() {
            write!(f, "{}{k}={}", if i == 0 { '?' } else { '&' }, percent_encode(v, b"/:,[]@?="))?;
        }
        Ok(())
    }
}
