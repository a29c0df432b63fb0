//! The end-to-end workloads, after Apiary's evaluation: their data sizes, request mixes and
//! correctness checks, the same for Comb and for the PostgreSQL baseline. What differs
//! between the systems (how an operation runs, how the data is loaded) is in `comb.rs` and
//! `postgres.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};

use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Workload {
    /// Increment a uniformly chosen counter.
    Counter,
    /// 80% search for free rooms, 20% book one (reserve + confirm).
    Hotel,
    /// 60% browse an item, 30% add to a cart, 10% check the cart out.
    Shop,
    /// 10% post (fanned out to the followers' timelines), 90% read a timeline.
    Retwis,
}

impl Workload {
    /// Every workload, in report order.
    pub(crate) const ALL: [Workload; 4] = [Workload::Counter, Workload::Hotel, Workload::Shop, Workload::Retwis];

    /// The example application that serves it.
    pub(crate) fn app(self) -> &'static comb_examples::App {
        let name = match self {
            Workload::Counter => "counter",
            Workload::Hotel => "hotel",
            Workload::Shop => "shop",
            Workload::Retwis => "retwis",
        };
        comb_examples::app(name).expect("every workload has its example application")
    }

    /// Its name in reports.
    pub(crate) fn name(self) -> &'static str {
        self.app().name
    }

    /// Whether its operations use its data up. Hotel's bookings take rooms until none is
    /// left, and a booking that finds no room is a cheap read: a faster system would run out
    /// sooner and then do less work per operation. The others' data lasts (shop's stock is
    /// a thousand units an item).
    pub(crate) fn uses_up_its_data(self) -> bool {
        matches!(self, Workload::Hotel)
    }
}

/// The data's sizes: Apiary's at scale 1.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Sizes {
    pub(crate) scale: f64,
    /// counter: keys.
    pub(crate) keys: i64,
    /// hotel: hotels x rooms x dates.
    pub(crate) hotels: i64,
    pub(crate) rooms: i64,
    pub(crate) dates: i64,
    /// shop: items, each with `stock` units, and users with carts.
    pub(crate) items: i64,
    pub(crate) stock: i64,
    pub(crate) shoppers: i64,
    /// retwis: users, each following the next `followees`, with `posts` posts each.
    pub(crate) users: i64,
    pub(crate) followees: i64,
    pub(crate) posts: i64,
}

/// Items' unit price (the same for all: the checks are about stock).
pub(crate) const PRICE: i64 = 3;

impl Sizes {
    /// The sizes at `scale` (1.0: 100,000 counters; 100 hotels x 10 rooms x 30 dates;
    /// 100,000 items; 10,000 retwis users following 50 each, 100,000 posts).
    pub(crate) fn new(scale: f64) -> anyhow::Result<Sizes> {
        anyhow::ensure!(scale.is_finite() && (0.001..=10.0).contains(&scale), "--scale must be between 0.001 and 10, not {scale}");
        let at_least = |n: f64, min: i64| ((n * scale).round() as i64).max(min);
        let users = at_least(10_000.0, 60);
        Ok(Sizes {
            scale,
            keys: at_least(100_000.0, 1),
            hotels: at_least(100.0, 1),
            rooms: 10,
            dates: 30,
            items: at_least(100_000.0, 10),
            stock: 1_000,
            shoppers: at_least(10_000.0, 10),
            users,
            followees: 50.min(users - 1),
            posts: 10,
        })
    }
}

/// One operation of a workload.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    CounterAdd { id: i64 },
    HotelSearch { hotel: i64, date: i64 },
    HotelBook { hotel: i64, date: i64, user: i64, booking: String },
    ShopBrowse { item: i64 },
    ShopCartAdd { user: i64, item: i64, qty: i64 },
    ShopCheckout { user: i64, order: String },
    RetwisPost { user: i64, at: i64, body: String },
    RetwisTimeline { user: i64 },
}

impl Op {
    /// The operation's name in reports: the workflow it runs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::CounterAdd { .. } => "counter",
            Op::HotelSearch { .. } => "hotel_search",
            Op::HotelBook { .. } => "book",
            Op::ShopBrowse { .. } => "browse",
            Op::ShopCartAdd { .. } => "cart_add",
            Op::ShopCheckout { .. } => "cart_checkout",
            Op::RetwisPost { .. } => "post",
            Op::RetwisTimeline { .. } => "timeline",
        }
    }

    /// The workflow the operation runs (the example application's), and its input.
    pub(crate) fn workflow(&self) -> (&'static str, serde_json::Value) {
        use serde_json::json;
        let input = match self {
            Op::CounterAdd { id } => json!({ "id": id }),
            Op::HotelSearch { hotel, date } => json!({ "hotel": hotel, "date": date }),
            Op::HotelBook { hotel, date, user, booking } => json!({ "hotel": hotel, "date": date, "user": user, "booking": booking }),
            Op::ShopBrowse { item } => json!({ "item": item }),
            Op::ShopCartAdd { user, item, qty } => json!({ "user": user, "item": item, "qty": qty }),
            Op::ShopCheckout { user, order } => json!({ "user": user, "order": order }),
            Op::RetwisPost { user, at, body } => json!({ "user": user, "at": at, "body": body }),
            Op::RetwisTimeline { user } => json!({ "user": user }),
        };
        (self.name(), input)
    }
}

/// A stream of random numbers from a client and its sequence number (splitmix64): free of
/// locks and shared state, and the same on every run.
struct Dice(u64);

impl Dice {
    fn new(client: usize, seq: u64) -> Dice {
        Dice((client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: i64) -> i64 {
        (self.next() % n.max(1) as u64) as i64
    }
}

/// The operations of one run: the workload's mix over the data's sizes. `nonce` keeps the
/// ids a run creates (bookings, orders) apart from those of earlier runs on the same data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mix {
    pub(crate) workload: Workload,
    pub(crate) sizes: Sizes,
    pub(crate) nonce: u64,
}

impl Mix {
    /// Client `client`'s operation number `seq`.
    pub(crate) fn op(&self, client: usize, seq: u64) -> Op {
        let s = &self.sizes;
        let mut dice = Dice::new(client, seq ^ self.nonce.rotate_left(32));
        let roll = dice.below(100);
        let unique = || format!("{}-{client}-{seq}", self.nonce);
        match self.workload {
            Workload::Counter => Op::CounterAdd { id: dice.below(s.keys) },
            Workload::Hotel if roll < 80 => Op::HotelSearch { hotel: dice.below(s.hotels), date: dice.below(s.dates) },
            // A guest per booking: the check adds them up.
            Workload::Hotel => Op::HotelBook { hotel: dice.below(s.hotels), date: dice.below(s.dates), user: ((client as i64) << 32) + seq as i64 + 1, booking: unique() },
            Workload::Shop if roll < 60 => Op::ShopBrowse { item: dice.below(s.items) },
            Workload::Shop if roll < 90 => Op::ShopCartAdd { user: dice.below(s.shoppers), item: dice.below(s.items), qty: 1 + dice.below(3) },
            Workload::Shop => Op::ShopCheckout { user: dice.below(s.shoppers), order: unique() },
            Workload::Retwis if roll < 10 => Op::RetwisPost { user: dice.below(s.users), at: now_us(), body: format!("hello from {}", unique()) },
            Workload::Retwis => Op::RetwisTimeline { user: dice.below(s.users) },
        }
    }
}

/// Microseconds since the Unix epoch: a new post's time.
fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// How an operation ended, as far as the checks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done, and nothing the checks count (a read, a cart's new item).
    Done,
    /// A counter incremented by one.
    Counted,
    /// A room reserved and confirmed for this guest.
    Booked { user: i64 },
    /// No free room left on that date.
    NoRoom,
    /// A cart checked out: its lines and units.
    CheckedOut { lines: i64, units: i64 },
    /// A checkout refused (an item out of stock): nothing changed.
    Refused,
    /// A post stored (and fanned out).
    Posted,
}

/// The outcomes of every operation run against one data set, added up for the checks.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) counted: AtomicI64,
    pub(crate) booked: AtomicI64,
    pub(crate) booked_users: AtomicI64,
    pub(crate) no_room: AtomicI64,
    pub(crate) lines: AtomicI64,
    pub(crate) units: AtomicI64,
    pub(crate) refused: AtomicI64,
    pub(crate) posted: AtomicI64,
}

impl Tally {
    pub(crate) fn record(&self, outcome: Outcome) {
        let add = |counter: &AtomicI64, n: i64| counter.fetch_add(n, Ordering::Relaxed);
        match outcome {
            Outcome::Done => {}
            Outcome::Counted => _ = add(&self.counted, 1),
            Outcome::Booked { user } => {
                add(&self.booked, 1);
                add(&self.booked_users, user);
            }
            Outcome::NoRoom => _ = add(&self.no_room, 1),
            Outcome::CheckedOut { lines, units } => {
                add(&self.lines, lines);
                add(&self.units, units);
            }
            Outcome::Refused => _ = add(&self.refused, 1),
            Outcome::Posted => _ = add(&self.posted, 1),
        }
    }

    fn get(counter: &AtomicI64) -> i64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A query of a check: one row of BIGINT counts and sums, the same SQL on Comb and
/// PostgreSQL. A query `by_users` takes a range of users (`$1` to `$2`) and is asked a
/// range at a time, its answers added up: a table too large to scan at once (retwis's five
/// million timeline rows at scale 1, beyond Comb's scan-rows-max) is
/// checked in pieces of `CHECK_USERS_PER_QUERY` users (about 50,000 rows as loaded); Comb asks
/// a piece that has grown beyond that bound in halves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckQuery {
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
    pub(crate) columns: &'static [&'static str],
    pub(crate) by_users: bool,
}

/// Users per piece of a `by_users` check query.
pub(crate) const CHECK_USERS_PER_QUERY: i64 = 100;

impl CheckQuery {
    /// The ranges of users to ask this query for (one empty range when it is not
    /// `by_users`).
    pub(crate) fn ranges(&self, sizes: &Sizes) -> Vec<(i64, i64)> {
        if !self.by_users {
            return vec![(0, 0)];
        }
        (0..sizes.users).step_by(CHECK_USERS_PER_QUERY as usize).map(|from| (from, (from + CHECK_USERS_PER_QUERY - 1).min(sizes.users - 1))).collect()
    }
}

/// The answers to a workload's check queries, by `query.column`.
pub(crate) type Answers = BTreeMap<String, i64>;

const fn query(name: &'static str, sql: &'static str, columns: &'static [&'static str]) -> CheckQuery {
    CheckQuery { name, sql, columns, by_users: false }
}

const fn query_by_users(name: &'static str, sql: &'static str, columns: &'static [&'static str]) -> CheckQuery {
    CheckQuery { name, sql, columns, by_users: true }
}

const COUNTER_CHECKS: &[CheckQuery] = &[
    query("counters", "SELECT count(*) AS n, CAST(COALESCE(SUM(n), 0) AS BIGINT) AS total FROM counters", &["n", "total"]),
];

const HOTEL_CHECKS: &[CheckQuery] = &[
    query("rooms", "SELECT count(*) AS rooms FROM hotel_rooms", &["rooms"]),
    query("reserved", "SELECT count(*) AS rooms, CAST(COALESCE(SUM(reserved_by), 0) AS BIGINT) AS guests FROM hotel_rooms WHERE reserved_by IS NOT NULL", &["rooms", "guests"]),
    query("confirmed", "SELECT count(*) AS bookings, CAST(COALESCE(SUM(user_id), 0) AS BIGINT) AS guests FROM hotel_confirmations", &["bookings", "guests"]),
];

const SHOP_CHECKS: &[CheckQuery] = &[
    query("items", "SELECT count(*) AS items, CAST(COALESCE(MIN(stock), 0) AS BIGINT) AS least, CAST(COALESCE(SUM(stock), 0) AS BIGINT) AS stock FROM shop_items", &["items", "least", "stock"]),
    query("orders", "SELECT count(*) AS lines, CAST(COALESCE(SUM(qty), 0) AS BIGINT) AS units FROM shop_orders", &["lines", "units"]),
];

const RETWIS_CHECKS: &[CheckQuery] = &[
    query_by_users(
        "posts",
        "SELECT count(*) AS posts, CAST(COALESCE(SUM(post_id), 0) AS BIGINT) AS ids, CAST(COALESCE(SUM(user_id), 0) AS BIGINT) AS authors FROM retwis_posts WHERE user_id BETWEEN $1 AND $2",
        &["posts", "ids", "authors"],
    ),
    query_by_users(
        "timeline",
        "SELECT count(*) AS entries, CAST(COALESCE(SUM(post_id), 0) AS BIGINT) AS ids, CAST(COALESCE(SUM(author), 0) AS BIGINT) AS authors FROM retwis_timeline WHERE user_id BETWEEN $1 AND $2",
        &["entries", "ids", "authors"],
    ),
];

/// The queries a workload's check asks, before and after the load.
pub(crate) fn check_queries(workload: Workload) -> &'static [CheckQuery] {
    match workload {
        Workload::Counter => COUNTER_CHECKS,
        Workload::Hotel => HOTEL_CHECKS,
        Workload::Shop => SHOP_CHECKS,
        Workload::Retwis => RETWIS_CHECKS,
    }
}

/// Compares the data after the load (`after`) with the data before it (`before`) and what
/// the operations reported (`tally`, since `before`). `ok: ...` or `FAILED: ...`.
pub(crate) fn check(workload: Workload, sizes: &Sizes, before: &Answers, after: &Answers, tally: &Tally) -> String {
    let at = |answers: &Answers, key: &str| answers.get(key).copied().unwrap_or(0);
    let delta = |key: &str| at(after, key) - at(before, key);
    let mut failures = String::new();
    let mut expect = |what: &str, got: i64, want: i64| {
        if got != want {
            _ = write!(failures, "{what}: {got}, expected {want}; ");
        }
    };
    let ok = match workload {
        Workload::Counter => {
            let counted = Tally::get(&tally.counted);
            expect("counters' sum grew by", delta("counters.total"), counted);
            format!("the counters' sum grew by the {counted} increments acknowledged")
        }
        Workload::Hotel => {
            let (booked, guests) = (Tally::get(&tally.booked), Tally::get(&tally.booked_users));
            expect("rooms", at(after, "rooms.rooms"), sizes.hotels * sizes.rooms * sizes.dates);
            expect("rooms newly reserved", delta("reserved.rooms"), booked);
            expect("confirmations added", delta("confirmed.bookings"), booked);
            expect("sum of the new reservations' guests", delta("reserved.guests"), guests);
            expect("sum of the new confirmations' guests", delta("confirmed.guests"), guests);
            format!("{booked} bookings acknowledged, each one room reserved and one confirmation, no room twice ({} found no room)", Tally::get(&tally.no_room))
        }
        Workload::Shop => {
            let (lines, units) = (Tally::get(&tally.lines), Tally::get(&tally.units));
            expect("lowest stock, where below zero", at(after, "items.least").min(0), 0);
            expect("stock taken", -delta("items.stock"), units);
            expect("order lines added", delta("orders.lines"), lines);
            expect("units ordered", delta("orders.units"), units);
            format!("no stock below zero; {units} units taken in {lines} order lines, as acknowledged ({} checkouts refused)", Tally::get(&tally.refused))
        }
        Workload::Retwis => {
            let posted = Tally::get(&tally.posted);
            let f = sizes.followees;
            expect("posts added", delta("posts.posts"), posted);
            expect("timeline entries", at(after, "timeline.entries"), f * at(after, "posts.posts"));
            expect("timeline entries' post ids (sum)", at(after, "timeline.ids"), f * at(after, "posts.ids"));
            expect("timeline entries' authors (sum)", at(after, "timeline.authors"), f * at(after, "posts.authors"));
            format!("{posted} posts acknowledged, every post in each of its {f} followers' timelines once")
        }
    };
    if failures.is_empty() { format!("ok: {ok}") } else { format!("FAILED: {}", failures.trim_end_matches("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_follow_their_shares() {
        let sizes = Sizes::new(1.0).unwrap();
        let mix = |workload| Mix { workload, sizes, nonce: 7 };
        let count = |workload, pred: fn(&Op) -> bool| (0..10_000u64).filter(|&seq| pred(&mix(workload).op((seq % 8) as usize, seq))).count();
        let hotel_books = count(Workload::Hotel, |op| matches!(op, Op::HotelBook { .. }));
        assert!((1_800..2_200).contains(&hotel_books), "{hotel_books} bookings in 10,000");
        let browses = count(Workload::Shop, |op| matches!(op, Op::ShopBrowse { .. }));
        let checkouts = count(Workload::Shop, |op| matches!(op, Op::ShopCheckout { .. }));
        assert!((5_800..6_200).contains(&browses) && (800..1_200).contains(&checkouts), "{browses} browses, {checkouts} checkouts");
        let posts = count(Workload::Retwis, |op| matches!(op, Op::RetwisPost { .. }));
        assert!((800..1_200).contains(&posts), "{posts} posts in 10,000");
        // Keys stay in range.
        assert!((0..10_000u64).all(|seq| matches!(mix(Workload::Counter).op(3, seq), Op::CounterAdd { id } if (0..sizes.keys).contains(&id))));
    }

    #[test]
    fn ids_differ_between_runs_and_clients() {
        let sizes = Sizes::new(0.01).unwrap();
        let books: Vec<String> = [(1, 0, 5), (1, 1, 5), (2, 0, 5)]
            .into_iter()
            .flat_map(|(nonce, client, seq)| (0..seq).map(move |s| (nonce, client, s)))
            .filter_map(|(nonce, client, seq)| match (Mix { workload: Workload::Shop, sizes, nonce }).op(client, seq * 10 + 9) {
                Op::ShopCheckout { order, .. } => Some(order),
                _ => None,
            })
            .collect();
        let unique: std::collections::HashSet<_> = books.iter().collect();
        assert_eq!(unique.len(), books.len());
    }

    #[test]
    fn pieces_of_a_check_cover_every_user_once() {
        let sizes = Sizes::new(0.25).unwrap();
        let timeline = RETWIS_CHECKS.iter().find(|q| q.name == "timeline").unwrap();
        let ranges = timeline.ranges(&sizes);
        assert_eq!(ranges.first().map(|r| r.0), Some(0));
        assert_eq!(ranges.last().map(|r| r.1), Some(sizes.users - 1));
        assert!(ranges.windows(2).all(|w| w[1].0 == w[0].1 + 1), "{ranges:?}");
        assert_eq!(COUNTER_CHECKS[0].ranges(&sizes), vec![(0, 0)]);
    }

    #[test]
    fn checks_catch_a_lost_or_doubled_effect() {
        let sizes = Sizes::new(0.01).unwrap();
        let tally = Tally::default();
        tally.record(Outcome::Booked { user: 5 });
        tally.record(Outcome::Booked { user: 9 });
        let answers = |reserved: i64, guests: i64| -> Answers {
            [("rooms.rooms", sizes.hotels * 300), ("reserved.rooms", reserved), ("reserved.guests", guests), ("confirmed.bookings", reserved), ("confirmed.guests", guests)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
        };
        let before = answers(1, 100);
        assert!(check(Workload::Hotel, &sizes, &before, &answers(3, 114), &tally).starts_with("ok"));
        assert!(check(Workload::Hotel, &sizes, &before, &answers(2, 109), &tally).starts_with("FAILED"), "a booking lost");
        assert!(check(Workload::Hotel, &sizes, &before, &answers(4, 123), &tally).starts_with("FAILED"), "a booking doubled");
    }
}
