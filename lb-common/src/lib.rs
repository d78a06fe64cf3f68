//! Map keys and values shared by the XDP programs and the `xlb` daemon.
//!
//! Every type here is `#[repr(C)]` with its padding spelled out as named
//! fields, so `bytemuck::Pod` is sound and `bpftool map dump` shows the same
//! fields the code uses. Sizes are asserted at compile time: a layout change
//! must be deliberate, because pinned maps outlive the program that made them.
#![no_std]

pub mod hash;
pub mod maps;
pub mod stats;

pub use maps::*;
pub use stats::Outcome;
