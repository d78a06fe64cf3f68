//! EC2 errors sorted by what the announcer does about them: throttling is
//! retried after a jittered backoff, a missing permission names the IAM
//! action to add, anything else is reported with its code.

use std::time::Duration;

/// The EC2 operation a failure belongs to, as IAM spells it after `ec2:`.
pub type Operation = &'static str;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("EC2 {operation}: throttled ({code}); retried after a backoff")]
    Throttled { operation: Operation, code: String },
    #[error(
        "EC2 {operation}: permission denied ({code}): the role lacks `ec2:{operation}`; add it \
         to the IAM policy (deploy/aws/iam-policy.json). AWS said: {message}"
    )]
    Denied {
        operation: Operation,
        code: String,
        message: String,
    },
    #[error("EC2 {operation}: {code}: {message}")]
    Service {
        operation: Operation,
        code: String,
        message: String,
    },
    #[error("EC2 {operation}: no answer: {message}")]
    Transport {
        operation: Operation,
        message: String,
    },
}

/// Error codes EC2 uses for "slow down"; the SDK's own list of throttling
/// codes (aws-runtime's THROTTLING_ERRORS) has these among others.
const THROTTLING: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "EC2ThrottledException",
    "TooManyRequestsException",
];

impl ApiError {
    /// Sorts a service error by its code. AWS denies with
    /// `UnauthorizedOperation` (its message encoded), IAM emulators such as
    /// moto with `AccessDenied`; both are a missing permission.
    pub fn from_code(operation: Operation, code: Option<&str>, message: Option<&str>) -> Self {
        let code = code.unwrap_or("Unknown").to_owned();
        let message = message.unwrap_or("(no message)").to_owned();
        if THROTTLING.contains(&code.as_str()) {
            Self::Throttled { operation, code }
        } else if code == "UnauthorizedOperation" || code == "AccessDenied" {
            Self::Denied {
                operation,
                code,
                message,
            }
        } else {
            Self::Service {
                operation,
                code,
                message,
            }
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            Self::Throttled { operation, .. }
            | Self::Denied { operation, .. }
            | Self::Service { operation, .. }
            | Self::Transport { operation, .. } => operation,
        }
    }

    /// The metric label of the outcome.
    pub fn result(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "throttled",
            Self::Denied { .. } => "denied",
            Self::Service { .. } => "error",
            Self::Transport { .. } => "unreachable",
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Throttled { code, .. }
            | Self::Denied { code, .. }
            | Self::Service { code, .. } => Some(code),
            Self::Transport { .. } => None,
        }
    }
}

/// Exponential backoff with full jitter (the AWS architecture blog's
/// recommendation for throttled clients): the n-th retry waits a uniform
/// time in [0, min(cap, base·2ⁿ)], so many routers throttled together do
/// not come back together.
#[derive(Clone, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next wait; `unit` is a uniform draw from [0, 1).
    pub fn next(&mut self, unit: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1 << self.attempt.min(20))
            .min(self.cap);
        self.attempt += 1;
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// A uniform draw in [0, 1) good enough for jitter: the clock's
/// nanoseconds through a mixer, so no RNG crate for one use.
pub fn jitter_unit() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sorted() {
        let t = ApiError::from_code("AssociateAddress", Some("RequestLimitExceeded"), None);
        assert!(matches!(t, ApiError::Throttled { .. }));
        let d = ApiError::from_code(
            "AssignPrivateIpAddresses",
            Some("AccessDenied"),
            Some(
                "User: arn:aws:iam::123456789012:user/xlb is not authorized to perform: ec2:AssignPrivateIpAddresses",
            ),
        );
        assert_eq!(d.result(), "denied");
        assert!(
            d.to_string()
                .contains("lacks `ec2:AssignPrivateIpAddresses`"),
            "{d}"
        );
        let u = ApiError::from_code(
            "AssociateAddress",
            Some("UnauthorizedOperation"),
            Some("Encoded"),
        );
        assert!(matches!(u, ApiError::Denied { .. }));
        let s = ApiError::from_code(
            "AssociateAddress",
            Some("InvalidAllocationID.NotFound"),
            Some("not found"),
        );
        assert_eq!(
            s.to_string(),
            "EC2 AssociateAddress: InvalidAllocationID.NotFound: not found"
        );
        assert_eq!(s.code(), Some("InvalidAllocationID.NotFound"));
    }

    #[test]
    fn backoff_grows_to_its_cap_and_jitters_below_it() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let full: Vec<_> = (0..7).map(|_| b.next(0.999_999)).collect();
        let ms: Vec<u128> = full.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [99, 199, 399, 799, 1599, 1999, 1999]);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(b.next(0.0), Duration::ZERO);
        assert_eq!(b.next(0.5), Duration::from_millis(100));
        assert_eq!(b.attempts(), 2);
        for _ in 0..1000 {
            let u = jitter_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
