//! A TAP device opened by the test process and moved into a test
//! namespace: the kernel's side of the TAP lives in the namespace
//! (10.78.0.1/24, fd78::1/64), our stack is on the other side (10.78.0.2,
//! fd78::2). Kernel-side peers run under `ip netns exec`.

use std::process::Command;

use conflux_netstack::{FrameDevice, NetStack, Pcap, StackConfig, TapDevice};

pub const KERNEL4: &str = "10.78.0.1";
pub const KERNEL6: &str = "fd78::1";
pub const OURS4: &str = "10.78.0.2";
pub const OURS6: &str = "fd78::2";

/// Runs `ip ARGS` (testkit's).
pub fn ip(args: &[&str]) -> Result<(), String> {
    conflux_testkit::ip(args)
}

/// A test namespace and the name of a device for it; the namespace (with
/// every process left in it and the devices in it) is removed on drop.
pub struct TapNs {
    pub ns: String,
    pub tap: String,
    netns: conflux_testkit::Netns,
}

impl TapNs {
    /// A fresh namespace; `tap` names a device not made yet.
    pub fn empty() -> Result<TapNs, String> {
        let netns = conflux_testkit::Netns::create("t")?;
        Ok(TapNs { ns: netns.name().to_owned(), tap: format!("{}d", netns.name()), netns })
    }

    /// Opens a TAP, moves it into a new namespace and configures the
    /// kernel's side. Must run within a tokio runtime.
    pub fn create(mtu: usize) -> Result<(TapNs, TapDevice), String> {
        TapNs::create_with(mtu, false)
    }

    /// As [`TapNs::create`], the TAP opened with virtio net headers and the
    /// kernel's offloads if `offloads`.
    pub fn create_with(mtu: usize, offloads: bool) -> Result<(TapNs, TapDevice), String> {
        let me = TapNs::empty()?;
        let dev = if offloads { TapDevice::open_with_offloads(&me.tap, mtu) } else { TapDevice::open(&me.tap, mtu) }
            .map_err(|e| format!("open TAP {}: {e}", me.tap))?;
        let mtu_s = mtu.to_string();
        me.netns.take_link(&me.tap)?;
        me.netns.ip(&["link", "set", "dev", &me.tap, "mtu", &mtu_s])?;
        me.netns.ip(&["addr", "add", "10.78.0.1/24", "dev", &me.tap])?;
        me.netns.ip(&["addr", "add", "fd78::1/64", "dev", &me.tap, "nodad"])?;
        me.netns.ip(&["link", "set", "dev", &me.tap, "up"])?;
        Ok((me, dev))
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        self.netns.cmd(program)
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        self.netns.ip(args)
    }

    /// The namespace's path (for `conflux_netstack::in_netns`).
    pub fn path(&self) -> std::path::PathBuf {
        self.netns.path()
    }
}

/// Our stack's config on the TAP.
pub fn stack_config() -> StackConfig {
    StackConfig::new()
        .ipv4(OURS4.parse().unwrap(), 24)
        .ipv6(OURS6.parse().unwrap(), 64)
        .mac([0x02, 0, 0, 0, 0x78, 0x02])
        .buffers(256 * 1024, 256 * 1024)
}

/// Our stack over `dev`, optionally capturing into `pcap`.
pub fn stack_on(dev: TapDevice, pcap: Option<&std::path::Path>) -> NetStack {
    match pcap {
        Some(path) => {
            NetStack::new(stack_config(), Box::new(Pcap::new(dev, path).expect("pcap")) as Box<dyn FrameDevice>)
        }
        None => NetStack::new(stack_config(), dev),
    }
}
