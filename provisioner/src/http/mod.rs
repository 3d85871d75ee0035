//! HTTP: the plain boot path for firmware ([`boot`]), asset serving ([`assets`]) and
//! the operator API, metrics and dashboard on their own HTTPS listener ([`api`]). The
//! boot router carries no API route.

pub mod api;
pub mod assets;
pub mod boot;
mod device;
pub mod limits;
pub mod mirror;
pub mod serve;
