//! A DNS function (feature `dns`): a domain name to all of its addresses.

use std::net::IpAddr;

use crate::{Ctx, UriKeys, req};

/// Adds a function computing [`UriKeys::ip`] from [`UriKeys::domain`] with
/// the system resolver (`tokio::net::lookup_host`): **every** address, in the
/// resolver's order (the first is tried first), duplicates removed. A failed
/// lookup gives no address (the NotFound report lists the function as having
/// returned nothing). Bounded by the resolve's per-attempt timeout.
pub fn dns_lookup(ctx: &Ctx) -> Ctx {
    let k = UriKeys::get();
    ctx.fold_async(&k.ip, req(&k.domain), |domain: String| async move {
        let mut ips: Vec<IpAddr> = Vec::new();
        match tokio::net::lookup_host((domain.as_str(), 0)).await {
            Ok(addrs) => {
                for a in addrs {
                    if !ips.contains(&a.ip()) {
                        ips.push(a.ip());
                    }
                }
            }
            Err(e) => tracing::debug!(%domain, error = %e, "DNS lookup failed"),
        }
        ips
    })
}
