//! Helpers shared by the integration tests: connected pairs of raw flows.
#![allow(dead_code, unreachable_pub)]

use conflux_hvsock::testing::{FakeVmm, MemFamily, MemSocket};
use conflux_hvsock::{Family, FamilyListener, HybridFamily, RawFlow, UnixAddr, UnixFamily};
use conflux_testkit::TempDir;

/// The `Socket` methods a scripted socket has nothing to do in: shutdowns
/// and close succeed, both addresses are unnamed (`#[macro_use] mod
/// common;` to use it).
#[allow(unused_macros)]
macro_rules! inert_socket_ends {
    () => {
        fn shutdown_read(&mut self) -> std::io::Result<()> {
            Ok(())
        }

        fn shutdown_write(&mut self) -> std::io::Result<()> {
            Ok(())
        }

        fn close(&mut self) -> std::io::Result<()> {
            Ok(())
        }

        fn local_addr(&self) -> std::io::Result<conflux_hvsock::UnixAddr> {
            Ok(conflux_hvsock::UnixAddr::unnamed())
        }

        fn peer_addr(&self) -> std::io::Result<conflux_hvsock::UnixAddr> {
            Ok(conflux_hvsock::UnixAddr::unnamed())
        }
    };
}

/// A connected pair of raw flows through a family listener.
pub async fn pair_via<F: Family>(family: &F, addr: &F::Addr) -> (RawFlow<F::Socket>, RawFlow<F::Socket>) {
    let listener = family.listen(addr, 16).expect("listen");
    let (client, accepted) = tokio::join!(family.connect(addr, None), listener.accept());
    (RawFlow::new(client.expect("connect")), RawFlow::new(accepted.expect("accept").0))
}

pub async fn unix_pair(dir: &TempDir) -> (RawFlow<conflux_hvsock::UnixSocket>, RawFlow<conflux_hvsock::UnixSocket>) {
    pair_via(&UnixFamily, &UnixAddr::new(dir.path().join("s"))).await
}

pub async fn mem_pair() -> (RawFlow<MemSocket>, RawFlow<MemSocket>) {
    let f = MemFamily::new();
    let (a, b) = f.pair();
    (RawFlow::new(a), RawFlow::new(b))
}

type HybridSock = conflux_hvsock::UnixSocket<conflux_hvsock::HybridAddr>;

/// Host connects through a fake VMM to an in-process guest listener.
pub async fn hybrid_pair(dir: &TempDir) -> (RawFlow<HybridSock>, RawFlow<HybridSock>, FakeVmm) {
    let vmm = FakeVmm::start(dir.path().join("v.sock")).expect("fake vmm");
    let guest = vmm.guest_listener(52, 16);
    let (host, accepted) = tokio::join!(HybridFamily.connect(&vmm.addr(52), None), guest.accept());
    (RawFlow::new(host.expect("connect")), RawFlow::new(accepted.expect("accept").0), vmm)
}
