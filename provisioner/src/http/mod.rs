//! HTTP: the plain boot path for firmware ([`boot`]), asset serving ([`assets`]) and
//! the read-only operator views ([`api`]). The boot router carries no API route.

pub mod api;
pub mod assets;
pub mod boot;
