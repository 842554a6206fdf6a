//! Setup code run inside another network namespace: a TAP or TUN device
//! created there (as slirp4netns does), its descriptor kept by this process,
//! which stays in its own namespace.

use std::io;
use std::path::{Path, PathBuf};

/// Runs `f` on a fresh thread that first entered the network namespace at
/// `netns` (`/proc/PID/ns/net`, or `/run/netns/NAME` for one made by
/// `ip netns add`), and returns what `f` returns. The thread also enters the
/// caller's tokio runtime, if any, so a [`TapDevice`](crate::TapDevice) or
/// [`TunDevice`](crate::TunDevice) that `f` opens is created inside the
/// namespace and registered with the caller's runtime; a command `f` spawns
/// (`ip addr add ...`) runs inside the namespace too.
///
/// The calling thread blocks until `f` returns (opening a device takes
/// microseconds). The thread ends with `f`: no thread of the process stays
/// in the namespace. Needs CAP_SYS_ADMIN (root); the error names the path.
///
/// ```no_run
/// use conflux_netstack::{TapDevice, in_netns};
/// # fn main() -> std::io::Result<()> {
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// let tap = in_netns("/proc/4242/ns/net".as_ref(), || TapDevice::open("tap0", 1500))?;
/// # drop(tap); Ok(()) })
/// # }
/// ```
pub fn in_netns<T, F>(netns: &Path, f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let path: PathBuf = netns.to_owned();
    let ns = std::fs::File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {}: {e}", path.display())))?;
    let runtime = tokio::runtime::Handle::try_current().ok();
    let thread = std::thread::Builder::new().name("conflux-netns".into()).spawn(move || {
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&ns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("entering network namespace {}: {e}", path.display()))
        })?;
        let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
        f()
    })?;
    thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
