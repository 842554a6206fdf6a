//! An application that builds a userspace stack first and installs its
//! logging afterwards, as applications do: `tracing_subscriber::fmt().init()`
//! must not find the process's `log` logger taken by the library. smoltcp's
//! `log` records then reach the subscriber through `tracing-log`.
//!
//! Run: `RUST_LOG=smoltcp=debug cargo run -p conflux-netstack --example tracing_init`

use conflux_netstack::{LinkConfig, NetStack, StackConfig, link_pair};
use conflux_tcp::{ConnectOptions, TcpStack};

pub(crate) fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async {
        let (a, b) = link_pair(LinkConfig::ethernet());
        let client = NetStack::new(StackConfig::new().ipv4("10.0.0.1".parse().unwrap(), 24), a);
        let _server =
            NetStack::new(StackConfig::new().ipv4("10.0.0.2".parse().unwrap(), 24).mac([2, 0, 0, 0, 0, 2]), b);
        // The stack exists; now the application sets up its logging.
        tracing_subscriber::fmt().with_max_level(tracing::Level::DEBUG).init();
        // Nobody listens on port 9: smoltcp logs as it answers with a RST.
        let refused = client.create_connection("10.0.0.2:9".parse().unwrap(), ConnectOptions::new()).await;
        println!("connect to a closed port: {refused:?}");
    });
}
