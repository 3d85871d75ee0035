//! The operating systems the appliance installs, one folder each: [`talos`] (Talos
//! Linux) and [`k0s`] (Flatcar + k0s).

pub mod k0s;
pub mod talos;
