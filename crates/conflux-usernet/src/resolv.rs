//! The host's resolver, for the DNS forwarder's default upstream.

use std::net::{IpAddr, SocketAddr};

/// The first `nameserver` of a resolv.conf text (`/etc/resolv.conf`), port
/// 53; `None` if there is none. An IPv6 link-local nameserver with a zone
/// (`fe80::1%eth0`) is skipped: a socket address cannot name the zone by
/// text. Comments (`#`, `;`) and other keywords are ignored.
pub fn resolv_conf_upstream(text: &str) -> Option<SocketAddr> {
    text.lines()
        .map(|line| line.split(['#', ';']).next().unwrap_or(""))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .find_map(|addr| addr.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_usable_nameserver_is_the_upstream() {
        let text = "# generated\nsearch example.test\noptions edns0\n; nameserver 192.0.2.9\nnameserver fe80::1%eth0\nnameserver 127.0.0.53 # stub\nnameserver 192.0.2.1\n";
        assert_eq!(resolv_conf_upstream(text), Some("127.0.0.53:53".parse().unwrap()));
        assert_eq!(resolv_conf_upstream("nameserver ::1\n"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(resolv_conf_upstream("search x\n"), None);
        assert_eq!(resolv_conf_upstream("nameserver\nnameserver not-an-ip\n"), None);
        assert_eq!(resolv_conf_upstream(""), None);
    }
}
