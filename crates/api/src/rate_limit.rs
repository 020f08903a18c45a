//! Per-project request rate limiting (GCRA via `governor`), off unless configured.
//!
//! Each API replica keeps its own buckets, so the effective limit of a deployment is the per-replica
//! limit times the number of replicas behind the load balancer.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use userexport_domain::{Code, ProjectId};

use crate::error::{ApiDialect, ApiError};

/// A shared per-project limiter: `per_second` requests per second on average, bursts of `burst`.
#[derive(Clone)]
pub struct ProjectRateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    per_second: NonZeroU32,
    burst: NonZeroU32,
}

impl std::fmt::Debug for ProjectRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectRateLimit").field("per_second", &self.per_second).field("burst", &self.burst).finish()
    }
}

impl ProjectRateLimit {
    /// A limiter allowing `per_second` requests per second and bursts of `burst` per project.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self { limiter: Arc::new(RateLimiter::dashmap(quota)), per_second, burst }
    }

    /// Counts one request of `project`; over the limit → 429 `RateLimited` with `Retry-After`
    /// (whole seconds, at least 1).
    pub fn check(&self, dialect: ApiDialect, project: &ProjectId) -> Result<(), ApiError> {
        match self.limiter.check_key(&project.as_str().to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                metrics::counter!("userexport_rate_limited_total", "dialect" => dialect.as_str()).increment(1);
                Err(ApiError::with_message(dialect, Code::RateLimited, "API rate limit exceeded.")
                    .retry_after(u32::try_from(secs.max(1)).unwrap_or(u32::MAX)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_with_retry_after() {
        let limit = ProjectRateLimit::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(3).unwrap());
        let (a, b) = (ProjectId::generate(), ProjectId::generate());
        for _ in 0..3 {
            limit.check(ApiDialect::Descope, &a).unwrap();
        }
        let err = limit.check(ApiDialect::Descope, &a).unwrap_err();
        assert_eq!(err.code, Code::RateLimited);
        assert_eq!(err.retry_after_secs, Some(1));
        assert_eq!(err.body()["errorCode"], "E130429");
        // Another project has its own bucket.
        limit.check(ApiDialect::Descope, &b).unwrap();
    }
}
