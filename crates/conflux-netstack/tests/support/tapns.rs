//! A TAP device opened by the test process and moved into a test
//! namespace: the kernel's side of the TAP lives in the namespace
//! (10.78.0.1/24, fd78::1/64), our stack is on the other side (10.78.0.2,
//! fd78::2). Kernel-side peers run under `ip netns exec`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use conflux_netstack::{FrameDevice, NetStack, Pcap, StackConfig, TapDevice};

pub const KERNEL4: &str = "10.78.0.1";
pub const KERNEL6: &str = "fd78::1";
pub const OURS4: &str = "10.78.0.2";
pub const OURS6: &str = "fd78::2";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The namespace (with every process left in it) is removed on drop.
pub struct TapNs {
    pub ns: String,
    pub tap: String,
}

impl TapNs {
    /// Opens a TAP, moves it into a new namespace and configures the
    /// kernel's side. Must run within a tokio runtime.
    pub fn create(mtu: usize) -> Result<(TapNs, TapDevice), String> {
        TapNs::create_with(mtu, false)
    }

    /// As [`TapNs::create`], the TAP opened with virtio net headers and the
    /// kernel's offloads if `offloads`.
    pub fn create_with(mtu: usize, offloads: bool) -> Result<(TapNs, TapDevice), String> {
        let base = format!("cfx{:x}t{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let me = TapNs { ns: format!("{base}n"), tap: format!("{base}d") };
        assert!(me.ns.len() <= 15 && me.tap.len() <= 15, "names too long: {}", me.tap);
        let dev = if offloads { TapDevice::open_with_offloads(&me.tap, mtu) } else { TapDevice::open(&me.tap, mtu) }
            .map_err(|e| format!("open TAP {}: {e}", me.tap))?;
        ip(&["netns", "add", &me.ns])?;
        let mtu_s = mtu.to_string();
        ip(&["link", "set", "dev", &me.tap, "netns", &me.ns])?;
        ip(&["-n", &me.ns, "link", "set", "dev", &me.tap, "mtu", &mtu_s])?;
        ip(&["-n", &me.ns, "addr", "add", "10.78.0.1/24", "dev", &me.tap])?;
        ip(&["-n", &me.ns, "addr", "add", "fd78::1/64", "dev", &me.tap, "nodad"])?;
        ip(&["-n", &me.ns, "link", "set", "dev", &me.tap, "up"])?;
        ip(&["-n", &me.ns, "link", "set", "dev", "lo", "up"])?;
        Ok((me, dev))
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }
}

impl Drop for TapNs {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.ns]) {
            eprintln!("cleanup: {e}");
        }
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
