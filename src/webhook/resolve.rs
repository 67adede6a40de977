//! Webhook host names are resolved by hickory, as the SSH dialer resolves targets
//! (`ssh::dial`): reqwest's default calls getaddrinfo, which in the statically linked
//! release binary cannot load glibc's NSS modules. IP-literal URLs never get here.

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

pub(super) struct SystemResolver(Option<TokioResolver>);

impl SystemResolver {
    /// Reads /etc/resolv.conf and /etc/hosts once; without them only IP-literal URLs work,
    /// which is logged here rather than at every delivery.
    pub fn new() -> Self {
        let resolver = TokioResolver::builder_tokio().and_then(|b| b.build());
        if let Err(e) = &resolver {
            tracing::warn!(error = %e, "cannot read the resolver configuration; webhook URLs need IP addresses");
        }
        SystemResolver(resolver.ok())
    }
}

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.0.clone();
        // A trailing dot makes the name absolute: the operator's URL names the host exactly,
        // search domains are not tried.
        let host = name.as_str();
        let fqdn = if host.ends_with('.') {
            host.to_owned()
        } else {
            format!("{host}.")
        };
        Box::pin(async move {
            let resolver = resolver.ok_or("no resolver configuration")?;
            let lookup = resolver.lookup_ip(fqdn.as_str()).await?;
            // Port 0: reqwest puts the URL's port (or the scheme's) in its place.
            let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
