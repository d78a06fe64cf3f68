//! The eBPF programs of xlb: the XDP balancer and decapsulator, and the
//! probe path's tc program (`probe`). Each program is a thin `[[bin]]`
//! entry point; the modules here are the stages a packet goes through, in
//! the order the balancer's story reads: parse, look up the VIP, pick the
//! backend, route, encapsulate (or answer with ICMP), count.
#![no_std]

pub mod addr;
pub mod balancer;
pub mod csum;
pub mod decap;
pub mod encap;
pub mod fib;
pub mod filter;
pub mod icmp;
pub mod maps;
pub mod neighbour;
pub mod parse;
pub mod probe;
pub mod ptr;
pub mod scratch;
pub mod verdict;
