//! IPv4 subnets as written in the config (`10.0.0.0/24`).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// An IPv4 subnet, `10.0.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    /// Network address (host bits zero).
    pub network: Ipv4Addr,
    /// Prefix length, 8..=30.
    pub prefix: u8,
}

impl Subnet {
    /// The netmask.
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix)))
    }
    /// The directed broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(self.mask()))
    }
    /// Whether `ip` is a host address of the subnet.
    pub fn contains_host(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.mask()) == u32::from(self.network)
            && ip != self.network
            && ip != self.broadcast()
    }
}

/// Why a text is not a `a.b.c.d/len` subnet (the text shows the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    /// No `/len`.
    #[error("{0:?}: expected a.b.c.d/len")]
    Shape(String),
    /// The address part does not parse.
    #[error("{0:?}: {1}")]
    Address(String, std::net::AddrParseError),
    /// The length part does not parse.
    #[error("{0:?}: {1}")]
    Length(String, std::num::ParseIntError),
    /// A length the DHCP server does not serve.
    #[error("{0:?}: prefix length must be 8..=30")]
    Range(String),
    /// Host bits set; carries the network that was probably meant.
    #[error("{text:?}: host bits set (did you mean {network}/{prefix}?)")]
    HostBits {
        /// The input.
        text: String,
        /// The network with the host bits cleared.
        network: Ipv4Addr,
        /// The prefix length.
        prefix: u8,
    },
}

impl std::str::FromStr for Subnet {
    type Err = SubnetError;
    fn from_str(s: &str) -> Result<Self, SubnetError> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| SubnetError::Shape(s.to_string()))?;
        let ip: Ipv4Addr = a.parse().map_err(|e| SubnetError::Address(s.to_string(), e))?;
        let prefix: u8 = p.parse().map_err(|e| SubnetError::Length(s.to_string(), e))?;
        if !(8..=30).contains(&prefix) {
            return Err(SubnetError::Range(s.to_string()));
        }
        let sub = Self { network: ip, prefix };
        if u32::from(ip) & !u32::from(sub.mask()) != 0 {
            return Err(SubnetError::HostBits {
                text: s.to_string(),
                network: Ipv4Addr::from(u32::from(ip) & u32::from(sub.mask())),
                prefix,
            });
        }
        Ok(sub)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}
