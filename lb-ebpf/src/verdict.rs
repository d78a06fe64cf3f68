//! What the program decided for a packet, carried out of every stage with
//! `?`: a stage either continues with a value or ends the story with a
//! verdict (Katran's "final action or continue", as a `Result`).

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use lb_common::Outcome;

/// `vip_id`/`backend_id` when the packet has none.
pub const NONE: u32 = u32::MAX;

#[derive(Clone, Copy)]
pub struct Verdict {
    pub action: u32,
    pub outcome: Outcome,
    pub vip_id: u32,
    pub backend_id: u32,
}

/// A stage's result: `Err` ends processing with that verdict.
pub type Step<T> = Result<T, Verdict>;

impl Verdict {
    #[inline(always)]
    pub const fn pass(outcome: Outcome) -> Self {
        Self {
            action: XDP_PASS,
            outcome,
            vip_id: NONE,
            backend_id: NONE,
        }
    }

    #[inline(always)]
    pub const fn drop(outcome: Outcome) -> Self {
        Self {
            action: XDP_DROP,
            outcome,
            vip_id: NONE,
            backend_id: NONE,
        }
    }

    #[inline(always)]
    pub const fn tx(outcome: Outcome) -> Self {
        Self {
            action: XDP_TX,
            outcome,
            vip_id: NONE,
            backend_id: NONE,
        }
    }

    #[inline(always)]
    pub const fn redirect() -> Self {
        Self {
            action: XDP_REDIRECT,
            outcome: Outcome::Redirect,
            vip_id: NONE,
            backend_id: NONE,
        }
    }

    #[inline(always)]
    pub const fn for_vip(mut self, vip_id: u32) -> Self {
        self.vip_id = vip_id;
        self
    }

    #[inline(always)]
    pub const fn to_backend(mut self, backend_id: u32) -> Self {
        self.backend_id = backend_id;
        self
    }
}
