//! Who may create sessions: `Authorization: Bearer <token>` against the configured API
//! tokens, compared in constant time, and a per-token and per-client-IP rate limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use hyper::header::{AUTHORIZATION, HeaderMap};
use parking_lot::Mutex;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::error::ApiError;
use crate::config::ApiToken;

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The name of the token a request presented, or `unauthorized`.
pub fn authenticate<'a>(headers: &HeaderMap, tokens: &'a [ApiToken]) -> Result<&'a str, ApiError> {
    let presented = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    // Every token is compared, in constant time, so timing tells nothing about any of them.
    let mut found = None;
    for token in tokens {
        if bool::from(token.token.expose().as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(token.name.as_str());
        }
    }
    found.ok_or_else(ApiError::unauthorized)
}

/// What a rate limit is kept per: an API token (by name) or a client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    Token(String),
    Client(IpAddr),
}

/// Token buckets: `per_minute` requests a minute, in bursts of up to `per_minute`.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<RateKey, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Buckets kept before idle, full ones are dropped: bounds memory under many client IPs.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from every key's bucket, or none if any is empty; the error says
    /// how long until one would pass.
    pub fn check(&self, keys: &[RateKey]) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.last).as_secs_f64() * rate < capacity
            });
        }
        let mut wait = Duration::ZERO;
        for key in keys {
            let bucket = buckets.entry(key.clone()).or_insert(Bucket {
                tokens: capacity,
                last: now,
            });
            bucket.tokens = (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * rate)
                .min(capacity);
            bucket.last = now;
            if bucket.tokens < 1.0 {
                wait = wait.max(Duration::from_secs_f64((1.0 - bucket.tokens) / rate));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for key in keys {
            if let Some(bucket) = buckets.get_mut(key) {
                bucket.tokens -= 1.0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use hyper::header::HeaderValue;

    fn tokens() -> Vec<ApiToken> {
        vec![
            ApiToken {
                name: "ci".into(),
                token: Secret::new("token-for-ci-0123456789".into()),
            },
            ApiToken {
                name: "ops".into(),
                token: Secret::new("token-for-ops-012345678".into()),
            },
        ]
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_tokens() {
        let tokens = tokens();
        assert_eq!(
            authenticate(&with("Bearer token-for-ops-012345678"), &tokens).unwrap(),
            "ops"
        );
        assert_eq!(
            authenticate(&with("Bearer token-for-ci-0123456789"), &tokens).unwrap(),
            "ci"
        );
        for bad in [
            "Bearer token-for-ci-012345678",
            "Bearer ",
            "token-for-ci-0123456789",
            "Basic dTpw",
            "Bearer token-for-ci-0123456789x",
        ] {
            assert_eq!(
                authenticate(&with(bad), &tokens).unwrap_err().code(),
                "unauthorized",
                "{bad}"
            );
        }
        assert!(authenticate(&HeaderMap::new(), &tokens).is_err());
        assert!(
            authenticate(&with("Bearer anything-at-all-000"), &[]).is_err(),
            "no tokens: nobody"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_refills() {
        let limiter = RateLimiter::new(60);
        let key = [RateKey::Token("ci".into())];
        for _ in 0..60 {
            limiter.check(&key).unwrap();
        }
        let wait = limiter.check(&key).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.check(&key).unwrap();
        assert!(limiter.check(&key).is_err());
        // Another key has its own bucket; a refused request takes from none of them.
        let client = RateKey::Client("127.0.0.1".parse().unwrap());
        assert!(limiter.check(&[client.clone(), key[0].clone()]).is_err());
        limiter.check(&[client]).unwrap();
        assert!(RateLimiter::new(0).check(&key).is_ok());
    }
}
