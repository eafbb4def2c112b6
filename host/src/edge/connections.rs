//! The front door's budget of connections: how many may be open at once,
//! in all and per client address, and which one gives way when the host
//! is full.
//!
//! A client that opens connections and never finishes a request
//! (slowloris) costs a file descriptor and a little memory per connection,
//! and without a budget takes the host down for everyone. So:
//! - a client address holds at most `max_connections_per_ip`; past that its
//!   new connections are refused at once;
//! - at `max_connections`, a new connection evicts the oldest connection
//!   that has no request in flight (one still sending its request head, or
//!   idle between keep-alive requests): it loses nothing, and a well-formed
//!   request gets through however many half-open connections are held
//!   against it. Only when every connection is busy is the new one refused;
//! - past that, [`RESERVE`] more connections are admitted for the
//!   operator: they reach the control plane (`/healthz`, the dashboard, log
//!   streams) and nothing else;
//! - the header-read timeout (`edge::server`) closes half-open connections
//!   in any case.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Raises this process's open-file limit to its hard limit (connections are
/// files) and returns the limit now in force.
pub(crate) fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the
    // calls; RLIMIT_NOFILE is a constant every Unix supports.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// Connections admitted beyond `max_connections` when every one is busy,
/// for the control plane only.
pub(crate) const RESERVE: usize = 32;

/// The limits, from `[host]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub(crate) max_connections: usize,
    pub(crate) max_per_address: usize,
}

impl Budget {
    /// `max_connections` as configured, else half the file limit (the other
    /// half for components, the cache, NATS, viewers' upgrades), at most
    /// 10,000.
    pub(crate) fn new(max_connections: Option<usize>, max_per_address: usize) -> Self {
        // Raised in any case: more than connections needs descriptors.
        let files = raise_file_limit();
        let max_connections = max_connections.unwrap_or_else(|| {
            usize::try_from(files / 2)
                .unwrap_or(usize::MAX)
                .clamp(64, 10_000)
        });
        Budget {
            max_connections,
            max_per_address,
        }
    }
}

/// Every open connection, oldest first.
pub(crate) struct Connections {
    budget: Budget,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Open connections by id (ids grow, so the first is the oldest).
    open: BTreeMap<u64, Arc<Connection>>,
    /// How many of `open` came from the operator's reserve.
    reserved: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One connection's standing, shared with the task that serves it.
pub(crate) struct Connection {
    address: IpAddr,
    /// Admitted from the reserve: control plane only.
    reserved: bool,
    /// Requests in flight, responses until their body is sent.
    busy: AtomicUsize,
    evicted: AtomicBool,
    /// Wakes the connection's task when it is evicted.
    evict: Notify,
}

impl Connection {
    /// Whether this connection may only reach the control plane.
    pub(crate) fn reserved(&self) -> bool {
        self.reserved
    }

    /// A request arrived; its response is on its way until the guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self.clone())
    }

    /// Resolves when the host needs this connection's slot back.
    pub(crate) async fn evicted(&self) {
        let notified = self.evict.notified();
        if self.evicted.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// Marks a connection busy while it lives.
pub(crate) struct BusyGuard(Arc<Connection>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a connection was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its address already holds `max_connections_per_ip`.
    TooManyFromAddress,
    /// Every one of `max_connections` is busy with a request, and the
    /// operator's reserve is taken too.
    Full,
}

impl Refused {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refused::TooManyFromAddress => {
                "too many connections from this address (max_connections_per_ip)"
            }
            Refused::Full => "the host is at max_connections, every one busy",
        }
    }
}

/// A connection's place in the budget; dropping it frees the place.
pub(crate) struct Ticket {
    connections: Arc<Connections>,
    id: u64,
    pub(crate) connection: Arc<Connection>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.connections.lock();
        if let Some(connection) = state.open.remove(&self.id) {
            state.release(&connection);
        }
    }
}

impl State {
    /// Frees the places of a connection taken out of `open`.
    fn release(&mut self, connection: &Connection) {
        if connection.reserved {
            self.reserved -= 1;
        }
        if let Some(count) = self.by_address.get_mut(&connection.address) {
            *count -= 1;
            if *count == 0 {
                self.by_address.remove(&connection.address);
            }
        }
    }

    /// Evicts the oldest connection of the given kind with no request in
    /// flight; false if there is none.
    fn evict_idle(&mut self, reserved: bool) -> bool {
        let idle = self
            .open
            .iter()
            .find(|(_, c)| c.reserved == reserved && c.busy.load(Ordering::Relaxed) == 0)
            .map(|(id, c)| (*id, c.clone()));
        let Some((id, evicted)) = idle else {
            return false;
        };
        // Its place is free now; its task closes it at the next poll.
        self.open.remove(&id);
        self.release(&evicted);
        evicted.evicted.store(true, Ordering::Release);
        evicted.evict.notify_waiters();
        true
    }
}

impl Connections {
    pub(crate) fn new(budget: Budget) -> Arc<Self> {
        Arc::new(Connections {
            budget,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::base::sync::lock(&self.state)
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Admits a connection from `address`, evicting the oldest idle one if
    /// the host is full; or says why not.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, Refused> {
        let mut state = self.lock();
        let from_address = state.by_address.get(&address).copied().unwrap_or(0);
        if from_address >= self.budget.max_per_address {
            return Err(Refused::TooManyFromAddress);
        }
        // Normal places first (evicting an idle one if need be), then the
        // operator's reserve (likewise), which never frees a normal place.
        let normal = state.open.len() - state.reserved;
        let reserved = if normal < self.budget.max_connections || state.evict_idle(false) {
            false
        } else if state.reserved < RESERVE || state.evict_idle(true) {
            true
        } else {
            return Err(Refused::Full);
        };
        if reserved {
            state.reserved += 1;
        }
        let id = state.next_id;
        state.next_id += 1;
        let connection = Arc::new(Connection {
            address,
            reserved,
            busy: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        state.open.insert(id, connection.clone());
        *state.by_address.entry(address).or_default() += 1;
        Ok(Ticket {
            connections: self.clone(),
            id,
            connection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn connections(max_connections: usize, max_per_address: usize) -> Arc<Connections> {
        Connections::new(Budget {
            max_connections,
            max_per_address,
        })
    }

    #[test]
    fn an_address_holds_at_most_its_share() {
        let all = connections(10, 2);
        let _a = all.admit(ip(2)).unwrap();
        let b = all.admit(ip(2)).unwrap();
        assert_eq!(all.admit(ip(2)).err(), Some(Refused::TooManyFromAddress));
        assert!(all.admit(ip(1)).is_ok(), "another address is not affected");
        drop(b);
        assert!(
            all.admit(ip(2)).is_ok(),
            "a closed connection frees its place"
        );
    }

    #[tokio::test]
    async fn a_full_host_evicts_its_oldest_idle_connection_never_a_busy_one() {
        let all = connections(3, 100);
        let busy = all.admit(ip(2)).unwrap();
        let _working = busy.connection.busy();
        let oldest_idle = all.admit(ip(3)).unwrap();
        let _younger_idle = all.admit(ip(3)).unwrap();
        let newcomer = all.admit(ip(1)).unwrap();
        // The oldest idle one was told to go, and its place counted free.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            oldest_idle.connection.evicted(),
        )
        .await
        .expect("evicted");
        assert_eq!(all.open(), 3);
        assert!(!busy.connection.evicted.load(Ordering::Acquire));
        drop(oldest_idle); // its task ends: nothing is released twice
        assert_eq!(all.open(), 3);
        let _working_too = newcomer.connection.busy();
        let last = all.admit(ip(4)).unwrap(); // evicts the younger idle one
        let _working_as_well = last.connection.busy();
        assert!(!last.connection.reserved());
        // Every one busy: the operator's reserve, then nothing.
        let mut reserve = Vec::new();
        for _ in 0..RESERVE {
            let ticket = all.admit(ip(5)).unwrap();
            assert!(ticket.connection.reserved());
            let busy = ticket.connection.busy();
            reserve.push((ticket, busy));
        }
        assert_eq!(
            all.admit(ip(6)).err(),
            Some(Refused::Full),
            "every one busy"
        );
    }

    #[test]
    fn an_idle_reserve_connection_never_frees_a_normal_place() {
        let all = connections(2, 100);
        let a = all.admit(ip(1)).unwrap();
        let b = all.admit(ip(1)).unwrap();
        let _busy = (a.connection.busy(), b.connection.busy());
        let operator = all.admit(ip(2)).unwrap();
        assert!(operator.connection.reserved());
        // The operator's connection is idle now; the next one still goes to
        // the reserve (evicting the idle reserve one if the reserve is full),
        // never to a normal place.
        let next = all.admit(ip(3)).unwrap();
        assert!(next.connection.reserved());
        assert_eq!(all.open(), 4);
    }
}
