//! MetalLB address pools. The chart installs the controller and speakers but no
//! addresses; without an `IPAddressPool` and an advertisement every
//! `type: LoadBalancer` Service (Traefik's) stays `<pending>`. The pools live with
//! each cluster's values (`gitops/manifests/metallb/<cluster>/pools.yaml`, a
//! directory source of the metallb Application). Rules from MetalLB's API
//! (`metallb.io/v1beta1`, `api/v1beta1/ipaddresspool_types.go`: `spec.addresses`
//! are CIDRs or `first-last` ranges; `l2advertisement_types.go`:
//! `spec.ipAddressPools` names pools, empty = all): MetalLB reads them only from
//! its own namespace; pools must not hand out node, VIP or other clusters' pool
//! addresses (both clusters share the seed's 192.168.1.0/24).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::Value;

use super::Finding;
use super::workloads::{ClusterFacts, Deployment};

/// An inclusive address range.
type Range = (IpAddr, IpAddr);

fn as_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// Why an `IPAddressPool` address entry is not a range (the text is the entry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The part before `/` is not an address.
    #[error("{0:?}: not an address")]
    Address(String),
    /// The part after `/` is not a prefix length of the family.
    #[error("{0:?}: bad prefix length")]
    Prefix(String),
    /// Neither `/` nor `-`.
    #[error("{0:?}: neither a CIDR nor a first-last range")]
    Shape(String),
    /// One end of a first-last range is not an address.
    #[error("{entry:?}: {end:?} is not an address")]
    End {
        /// The whole entry.
        entry: String,
        /// The end that does not parse.
        end: String,
    },
    /// Last before first, or two families.
    #[error("{0:?}: not an ascending range of one address family")]
    Order(String),
}

/// `10.0.0.0/24` or `10.0.0.10-10.0.0.20` (same family, first ≤ last).
pub fn parse_range(s: &str) -> Result<Range, RangeError> {
    let s = s.trim();
    if let Some((ip, len)) = s.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| RangeError::Address(s.to_string()))?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(|| RangeError::Prefix(s.to_string()))?;
        let host = if len == bits {
            0
        } else {
            (1u128 << (bits - len)) - 1
        };
        let first = as_u128(ip) & !host;
        let last = first | host;
        let back = |n: u128| -> IpAddr {
            if ip.is_ipv4() {
                IpAddr::V4((n as u32).into())
            } else {
                IpAddr::V6(n.into())
            }
        };
        return Ok((back(first), back(last)));
    }
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| RangeError::Shape(s.to_string()))?;
    let a: IpAddr = a.trim().parse().map_err(|_| RangeError::End {
        entry: s.to_string(),
        end: a.to_string(),
    })?;
    let b: IpAddr = b.trim().parse().map_err(|_| RangeError::End {
        entry: s.to_string(),
        end: b.to_string(),
    })?;
    if a.is_ipv4() != b.is_ipv4() || as_u128(a) > as_u128(b) {
        return Err(RangeError::Order(s.to_string()));
    }
    Ok((a, b))
}

fn contains(r: &Range, ip: IpAddr) -> bool {
    r.0.is_ipv4() == ip.is_ipv4() && as_u128(r.0) <= as_u128(ip) && as_u128(ip) <= as_u128(r.1)
}

fn overlaps(a: &Range, b: &Range) -> bool {
    a.0.is_ipv4() == b.0.is_ipv4() && as_u128(a.0) <= as_u128(b.1) && as_u128(b.0) <= as_u128(a.1)
}

/// Checks every Application that deploys the metallb chart.
pub fn check(deployments: &[Deployment], clusters: &BTreeMap<String, ClusterFacts>) -> Vec<Finding> {
    let mut findings = Vec::new();
    // Every pool range with its owner, for the cross-cluster overlap rule.
    let mut all: Vec<(String, String, String, Range)> = Vec::new();
    for d in deployments
        .iter()
        .filter(|d| d.charts.iter().any(|c| c.chart == "metallb"))
    {
        let mut f = |file: &str, object: String, message: String| {
            findings.push(Finding {
                file: file.to_string(),
                object,
                message,
            })
        };
        let kind = |o: &Value, k: &str| {
            o.get("kind").and_then(Value::as_str) == Some(k)
                && o.get("apiVersion")
                    .and_then(Value::as_str)
                    .is_some_and(|a| a.starts_with("metallb.io/"))
        };
        let name = |o: &Value| {
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        let pools: Vec<&(String, Value)> = d
            .objects
            .iter()
            .filter(|(_, o)| kind(o, "IPAddressPool"))
            .collect();
        let ads: Vec<&(String, Value)> = d
            .objects
            .iter()
            .filter(|(_, o)| kind(o, "L2Advertisement") || kind(o, "BGPAdvertisement"))
            .collect();
        if pools.is_empty() {
            f(
                &d.file,
                d.object.clone(),
                format!(
                    "MetalLB on {} has no IPAddressPool among its sources: LoadBalancer Services stay pending \
                     (add gitops/manifests/metallb/{}/pools.yaml)",
                    d.cluster, d.cluster
                ),
            );
            continue;
        }
        if ads.is_empty() {
            f(
                &d.file,
                d.object.clone(),
                "no L2Advertisement or BGPAdvertisement: the pools' addresses are never announced".into(),
            );
        }
        let names: BTreeSet<String> = pools.iter().map(|(_, o)| name(o)).collect();
        let own = clusters.get(&d.cluster);
        for (file, o) in pools.iter().chain(ads.iter()).map(|x| (&x.0, &x.1)) {
            let ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(&d.namespace);
            if ns != d.namespace {
                f(
                    file,
                    format!("{}/{}", o["kind"].as_str().unwrap_or("?"), name(o)),
                    format!("namespace {ns:?}: MetalLB only reads {:?}", d.namespace),
                );
            }
        }
        for (file, o) in &pools {
            let obj = format!("IPAddressPool/{}", name(o));
            let addrs: Vec<&str> = o
                .pointer("/spec/addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if addrs.is_empty() {
                f(file, obj.clone(), "spec.addresses is empty".into());
            }
            for a in addrs {
                match parse_range(a) {
                    Err(e) => f(file, obj.clone(), format!("spec.addresses: {e}")),
                    Ok(r) => {
                        for ip in own.map(|c| c.addresses.as_slice()).unwrap_or_default() {
                            if contains(&r, *ip) {
                                f(
                                    file,
                                    obj.clone(),
                                    format!(
                                        "spec.addresses {a}: includes {ip}, a node/VIP address of {}",
                                        d.cluster
                                    ),
                                );
                            }
                        }
                        all.push((file.clone(), obj.clone(), d.cluster.clone(), r));
                    }
                }
            }
        }
        for (file, o) in &ads {
            for p in o
                .pointer("/spec/ipAddressPools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !names.contains(p) {
                    f(
                        file,
                        format!("{}/{}", o["kind"].as_str().unwrap_or("?"), name(o)),
                        format!("spec.ipAddressPools: no IPAddressPool {p:?} for {}", d.cluster),
                    );
                }
            }
        }
        // Addresses of the other clusters on the same network.
        for (other, c) in clusters.iter().filter(|(n, _)| **n != d.cluster) {
            for (file, o) in &pools {
                for a in o
                    .pointer("/spec/addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(r) = a.as_str().and_then(|a| parse_range(a).ok())
                        && let Some(ip) = c.addresses.iter().find(|ip| contains(&r, **ip))
                    {
                        f(
                            file,
                            format!("IPAddressPool/{}", name(o)),
                            format!("spec.addresses: includes {ip}, a node/VIP address of cluster {other}"),
                        );
                    }
                }
            }
        }
    }
    for (i, (file, obj, cluster, r)) in all.iter().enumerate() {
        for (_, obj2, cluster2, r2) in &all[i + 1..] {
            if cluster != cluster2 && overlaps(r, r2) {
                findings.push(Finding {
                    file: file.clone(),
                    object: obj.clone(),
                    message: format!("addresses overlap {obj2} of cluster {cluster2} (two clusters would answer ARP for them)"),
                });
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            parse_range("10.0.0.0/30").unwrap(),
            (ip("10.0.0.0"), ip("10.0.0.3"))
        );
        assert_eq!(
            parse_range("10.0.0.5/32").unwrap(),
            (ip("10.0.0.5"), ip("10.0.0.5"))
        );
        assert_eq!(
            parse_range(" 192.168.1.200 - 192.168.1.219 ").unwrap(),
            (ip("192.168.1.200"), ip("192.168.1.219"))
        );
        assert_eq!(parse_range("fd00::/126").unwrap(), (ip("fd00::"), ip("fd00::3")));
        for bad in [
            "10.0.0.9-10.0.0.1",
            "10.0.0.1-fd00::1",
            "10.0.0.0/33",
            "lan",
            "10.0.0.1",
        ] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
        let r = parse_range("10.0.0.0/24").unwrap();
        assert!(contains(&r, ip("10.0.0.255")) && !contains(&r, ip("10.0.1.0")));
        assert!(overlaps(&r, &parse_range("10.0.0.255-10.0.1.4").unwrap()));
        assert!(!overlaps(&r, &parse_range("fd00::/64").unwrap()));
    }
}
