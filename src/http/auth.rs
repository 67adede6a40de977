//! Who may create sessions: `Authorization: Bearer <token>` against the configured API
//! tokens, compared in constant time, and a per-token and per-client-IP rate limit.
//!
//! Failed token attempts are throttled per client address in the same buckets (so guessing
//! runs at `--create-rate-limit` a minute at most) and logged once per burst, with the
//! address and never the token presented.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{AUTHORIZATION, HeaderMap};
use parking_lot::Mutex;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::error::ApiError;
use crate::config::{ApiToken, ConfigError, TokenSource};

/// A burst of failed token attempts from one address is logged once, then at most once
/// this often while it goes on, with the count: a guessing run is visible without one
/// line per guess.
pub const AUTH_FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// The token of an `Authorization: Bearer <token>` header. The scheme is case-insensitive
/// (RFC 9110 §11.1: `bearer`, `BEARER`), and one or more spaces follow it.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The token a request presented, or `unauthorized`.
pub fn authenticate<'a>(
    headers: &HeaderMap,
    tokens: &'a [ApiToken],
) -> Result<&'a ApiToken, ApiError> {
    let presented = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    // Every token is compared, in constant time, so timing tells nothing about any of them.
    let mut found = None;
    for token in tokens {
        if bool::from(token.token.expose().as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(token);
        }
    }
    found.ok_or_else(ApiError::unauthorized)
}

/// The API token a request from `client` presents, with failures throttled and logged:
/// while the address has used up its failures, the answer is 429 without looking at the
/// token (so a throttled guesser learns nothing, not even from a right guess).
pub fn authenticate_client<'a>(
    headers: &HeaderMap,
    tokens: &'a [ApiToken],
    limiter: &RateLimiter,
    failures: &AuthFailures,
    client: IpAddr,
) -> Result<&'a ApiToken, ApiError> {
    let key = RateKey::FailedAuth(client);
    if let Err(wait) = limiter.peek(&key) {
        failures.note(client, true);
        return Err(ApiError::auth_throttled(wait));
    }
    authenticate(headers, tokens).inspect_err(|_| {
        // Takes the failure from the address's bucket; the next attempt sees it empty.
        let _ = limiter.check(std::slice::from_ref(&key));
        failures.note(client, false);
    })
}

/// Who made a request: the name of its API token, and whether that token is an admin's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub admin: bool,
}

impl Caller {
    /// Whether the caller may see and end a session created with the token `creator`.
    pub fn owns(&self, creator: &str) -> bool {
        self.admin || self.name == creator
    }
}

/// The API tokens in force, replaced whole when the token file is read again (SIGHUP), so
/// a request sees either the old set or the new one.
pub struct Tokens {
    current: parking_lot::RwLock<Arc<Vec<ApiToken>>>,
    source: TokenSource,
}

impl Tokens {
    pub fn new(tokens: Arc<Vec<ApiToken>>, source: TokenSource) -> Self {
        Tokens {
            current: parking_lot::RwLock::new(tokens),
            source,
        }
    }

    pub fn current(&self) -> Arc<Vec<ApiToken>> {
        self.current.read().clone()
    }

    /// Reads the token file again; on an error the tokens in force stay. Returns how many
    /// tokens are in force now.
    pub fn reload(&self) -> Result<usize, ConfigError> {
        if self.source.file.is_none() {
            return Ok(self.current.read().len());
        }
        let tokens = self.source.load()?;
        let n = tokens.len();
        *self.current.write() = Arc::new(tokens);
        Ok(n)
    }
}

/// What a rate limit is kept per: an API token (by name) or a client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    Token(String),
    Client(IpAddr),
    /// Failed API-token attempts from a client address.
    FailedAuth(IpAddr),
}

/// Failed token attempts per client address, for logging them once per burst.
#[derive(Default)]
pub struct AuthFailures {
    bursts: Mutex<HashMap<IpAddr, Burst>>,
}

#[derive(Clone, Copy)]
struct Burst {
    /// When this burst was last logged, and its latest attempt.
    logged: Instant,
    last: Instant,
    /// Refused (401) and throttled (429) attempts not yet logged.
    refused: u64,
    throttled: u64,
}

impl AuthFailures {
    /// Counts a refused attempt from `client` (or, `throttled`, one turned away unchecked),
    /// and logs when a burst starts (after a quiet `AUTH_FAILURE_LOG_EVERY`) and every
    /// `AUTH_FAILURE_LOG_EVERY` while it goes on. Returns whether it logged.
    pub fn note(&self, client: IpAddr, throttled: bool) -> bool {
        let now = Instant::now();
        let mut bursts = self.bursts.lock();
        let ended = |b: &Burst| now.duration_since(b.last) >= AUTH_FAILURE_LOG_EVERY;
        if bursts.len() >= MAX_BUCKETS && !bursts.contains_key(&client) {
            bursts.retain(|_, b| !ended(b));
            if bursts.len() >= MAX_BUCKETS {
                // Bounded memory under many addresses; at worst a burst is logged twice.
                bursts.clear();
            }
        }
        let starts = bursts.get(&client).is_none_or(ended);
        let fresh = Burst {
            logged: now,
            last: now,
            refused: 0,
            throttled: 0,
        };
        let burst = bursts.entry(client).or_insert(fresh);
        if starts {
            *burst = fresh;
        }
        burst.last = now;
        if throttled {
            burst.throttled += 1;
        } else {
            burst.refused += 1;
        }
        if !starts && now.duration_since(burst.logged) < AUTH_FAILURE_LOG_EVERY {
            return false;
        }
        tracing::warn!(
            client = %client,
            refused = burst.refused,
            throttled = burst.throttled,
            "API token attempts failed; logged again in a minute if they go on"
        );
        burst.logged = now;
        burst.refused = 0;
        burst.throttled = 0;
        true
    }
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
        self.take(keys, true)
    }

    /// Whether a request would pass `key` now, taking nothing.
    pub fn peek(&self, key: &RateKey) -> Result<(), Duration> {
        self.take(std::slice::from_ref(key), false)
    }

    fn take(&self, keys: &[RateKey], take: bool) -> Result<(), Duration> {
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
        if take {
            for key in keys {
                if let Some(bucket) = buckets.get_mut(key) {
                    bucket.tokens -= 1.0;
                }
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
                admin: false,
            },
            ApiToken {
                name: "ops".into(),
                token: Secret::new("token-for-ops-012345678".into()),
                admin: false,
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
            authenticate(&with("Bearer token-for-ops-012345678"), &tokens)
                .unwrap()
                .name,
            "ops"
        );
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            for gap in [" ", "  "] {
                let header = format!("{scheme}{gap}token-for-ci-0123456789");
                assert_eq!(
                    authenticate(&with(&header), &tokens).unwrap().name,
                    "ci",
                    "{header}"
                );
            }
        }
        for bad in [
            "Bearertoken-for-ci-0123456789",
            "Bearer  ",
            "Beare token-for-ci-0123456789",
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

    #[tokio::test(start_paused = true)]
    async fn failures_are_throttled_per_address() {
        let tokens = tokens();
        let limiter = RateLimiter::new(3);
        let failures = AuthFailures::default();
        let (guesser, other) = ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        let wrong = with("Bearer not-a-token-0123456789");
        let right = with("Bearer token-for-ci-0123456789");
        let attempt = |headers: &HeaderMap, client| {
            authenticate_client(headers, &tokens, &limiter, &failures, client)
                .map(|t| t.name.as_str())
                .map_err(|e| e.code())
        };
        // A right token takes nothing from the failure bucket.
        for _ in 0..5 {
            assert_eq!(attempt(&right, guesser), Ok("ci"));
        }
        for _ in 0..3 {
            assert_eq!(attempt(&wrong, guesser), Err("unauthorized"));
        }
        assert_eq!(attempt(&wrong, guesser), Err("rate_limited"));
        assert_eq!(
            attempt(&right, guesser),
            Err("rate_limited"),
            "a throttled address is not told a right guess"
        );
        assert_eq!(attempt(&right, other), Ok("ci"), "other addresses are not");
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(attempt(&right, guesser), Ok("ci"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_logged_once_per_burst() {
        let failures = AuthFailures::default();
        let client = "192.0.2.7".parse().unwrap();
        assert!(
            failures.note(client, false),
            "a burst's first failure is logged"
        );
        for _ in 0..600 {
            assert!(!failures.note(client, true));
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        // Still going a minute on: logged again, with the counts.
        assert!(failures.note(client, false));
        assert!(!failures.note(client, false));
        assert!(
            failures.note("192.0.2.8".parse().unwrap(), false),
            "per address"
        );
        tokio::time::advance(AUTH_FAILURE_LOG_EVERY).await;
        assert!(
            failures.note(client, false),
            "a quiet minute ends the burst"
        );
    }
}
