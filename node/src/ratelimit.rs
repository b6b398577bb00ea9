//! Rate limits per voter (on votes) and per client address (on every `/v1` request but the
//! admin routes), with governor's keyed GCRA limiters. Over a limit: `429 RATE_LIMITED`
//! with `Retry-After`. Admins (with `--auth jwt`) are exempt.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::serve::Listener;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::api::error::ApiError;
use crate::auth::Identity;
use crate::App;

/// How often limiters forget keys whose budget is full again, which bounds their memory
/// by the keys active in the last interval.
const FORGET_INTERVAL: Duration = Duration::from_secs(10);

/// The client's address as the listener saw it (none for listeners without one).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub Option<SocketAddr>);

/// Wraps any listener so that each connection's address reaches handlers as
/// `ConnectInfo<ClientAddr>` (axum offers that only for its own listener types).
pub struct AddrListener<L>(pub L);

impl<L> Listener for AddrListener<L>
where
    L: Listener,
    L::Addr: Into<Option<SocketAddr>>,
{
    type Io = L::Io;
    type Addr = ClientAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (io, ClientAddr(addr.into()))
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr().map(|addr| ClientAddr(addr.into()))
    }
}

pub struct Limits {
    per_voter: Option<DefaultKeyedRateLimiter<String>>,
    per_addr: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Log-in attempts per account and per address, whatever the other limits: a
    /// password guesser is slowed even where `--rate-limit-addr-per-sec` is off.
    login_per_account: Option<DefaultKeyedRateLimiter<String>>,
    login_per_addr: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// Log-in attempts a minute: per account, then per client address (a burst of that many,
/// then one every minute / that many).
#[derive(Clone, Copy, Debug)]
pub struct LoginLimits {
    pub per_account_per_minute: u32,
    pub per_address_per_minute: u32,
}

fn per_minute<K: std::hash::Hash + Eq + Clone>(count: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let count = NonZeroU32::new(count)?;
    let quota = Quota::with_period(std::time::Duration::from_secs(60) / count.get())?.allow_burst(count);
    Some(RateLimiter::keyed(quota))
}

/// A limiter of `per_sec` requests a second with bursts of `burst`; `None` when `per_sec`
/// is 0 (no limit).
fn limiter<K: std::hash::Hash + Eq + Clone>(per_sec: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
}

impl Limits {
    /// The `--rate-limit-*` and `--login-attempts-*` flags.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self::new(
            (config.rate_limit_voter_per_sec, config.rate_limit_voter_burst),
            (config.rate_limit_addr_per_sec, config.rate_limit_addr_burst),
            LoginLimits {
                per_account_per_minute: config.login_attempts_per_minute,
                per_address_per_minute: config.login_attempts_per_minute_per_address,
            },
        )
    }

    pub fn new(voter: (u32, u32), addr: (u32, u32), login: LoginLimits) -> Self {
        Self {
            per_voter: limiter(voter.0, voter.1),
            per_addr: limiter(addr.0, addr.1),
            login_per_account: per_minute(login.per_account_per_minute),
            login_per_addr: per_minute(login.per_address_per_minute),
        }
    }

    /// Checks one log-in attempt for `username` from `addr`, before any password is hashed.
    pub fn check_login(&self, username: &str, addr: Option<IpAddr>) -> Result<(), ApiError> {
        if let (Some(limiter), Some(addr)) = (&self.login_per_addr, addr) {
            check(limiter, &addr, "log-ins from this client address")?;
        }
        match &self.login_per_account {
            Some(limiter) => check(limiter, &username.to_string(), "log-ins to this account"),
            None => Ok(()),
        }
    }

    /// Checks one vote by `voter`.
    pub fn check_voter(&self, identity: &Identity, voter: &str) -> Result<(), ApiError> {
        match &self.per_voter {
            Some(limiter) if !is_admin(identity) => check(limiter, &voter.to_string(), "this voter"),
            _ => Ok(()),
        }
    }

    /// Checks one request from `addr` against the per-address limit.
    pub fn check_addr(&self, addr: std::net::IpAddr) -> Result<(), ApiError> {
        match &self.per_addr {
            Some(limiter) => check(limiter, &addr, "this client address"),
            None => Ok(()),
        }
    }

    /// The task that forgets idle keys now and then, for [`crate::Node`] to own; `None`
    /// when no limit is set. It holds the limits weakly and ends by itself once they go.
    pub fn forgetting(self: &Arc<Self>) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        if self.per_voter.is_none()
            && self.per_addr.is_none()
            && self.login_per_account.is_none()
            && self.login_per_addr.is_none()
        {
            return None;
        }
        let limits = Arc::downgrade(self);
        Some(async move {
            loop {
                tokio::time::sleep(FORGET_INTERVAL).await;
                let Some(limits) = limits.upgrade() else { return };
                if let Some(limiter) = &limits.per_voter {
                    limiter.retain_recent();
                }
                if let Some(limiter) = &limits.per_addr {
                    limiter.retain_recent();
                }
                if let Some(limiter) = &limits.login_per_account {
                    limiter.retain_recent();
                }
                if let Some(limiter) = &limits.login_per_addr {
                    limiter.retain_recent();
                }
            }
        })
    }
}

fn is_admin(identity: &Identity) -> bool {
    matches!(identity, Identity::User { admin: true, .. })
}

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    who: &str,
) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError::rate_limited(who, seconds)
    })
}

/// The per-address limit on `/v1` routes other than cluster management.
pub fn per_address(app: &App, request: &Request) -> Result<(), ApiError> {
    if let Some(limiter) = &app.limits.rate.per_addr {
        let path = request.uri().path();
        let limited = path.starts_with("/v1/") && !path.starts_with("/v1/cluster/");
        let identity = request.extensions().get::<Identity>();
        let addr = client_ip(request);
        if let (true, false, Some(addr)) = (limited, identity.is_some_and(is_admin), addr) {
            check(limiter, &addr, "this client address")?;
        }
    }
    Ok(())
}

/// The client's IP address, as the listener saw it.
pub fn client_ip(request: &Request) -> Option<std::net::IpAddr> {
    request.extensions().get::<ConnectInfo<ClientAddr>>().and_then(|c| c.0 .0).map(|a| a.ip())
}
