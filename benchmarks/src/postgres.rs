//! The PostgreSQL baseline: the same workloads, with the same mixes and checks, as functions
//! that call a PostgreSQL server over the network, the way a durable-workflow library on
//! PostgreSQL runs them: each workflow's start is a row (`wf_runs`), each step runs as one
//! transaction that also records the step's output (`wf_steps`), and the end updates the
//! run's row. Steps that Comb runs as one transaction (a hotel's find and take, a cart's
//! checkout) are one PostgreSQL transaction here too.
//!
//! `benchmarks/postgres.sh start` runs a throwaway server with its default (durable)
//! settings on a loopback port.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Statement};

use crate::apps::{Answers, Op, Outcome, PRICE, Sizes, Workload, check_queries};
use crate::driver::Failure;

/// Where `benchmarks/postgres.sh start` listens.
pub(crate) const DEFAULT_URL: &str = "postgresql://postgres@127.0.0.1:54329/postgres";

const WF_START: &str = "INSERT INTO wf_runs (id, name, input, status) VALUES ($1, $2, $3, 'running')";
const WF_STEP: &str = "INSERT INTO wf_steps (run_id, step, output) VALUES ($1, $2, $3)";
const WF_END: &str = "UPDATE wf_runs SET status = $2, output = $3, ended_at = now() WHERE id = $1";

const COUNTER_ADD: &str = "INSERT INTO counters (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = counters.n + 1 RETURNING n";
const HOTEL_FREE: &str = "SELECT room_id FROM hotel_rooms WHERE hotel_id = $1 AND date = $2 AND reserved_by IS NULL ORDER BY room_id LIMIT 10";
const HOTEL_FIND: &str = "SELECT room_id FROM hotel_rooms WHERE hotel_id = $1 AND date = $2 AND reserved_by IS NULL ORDER BY room_id LIMIT 1 FOR UPDATE SKIP LOCKED";
const HOTEL_TAKE: &str = "UPDATE hotel_rooms SET reserved_by = $4 WHERE hotel_id = $1 AND date = $2 AND room_id = $3 AND reserved_by IS NULL";
const HOTEL_CONFIRM: &str = "INSERT INTO hotel_confirmations (booking, hotel_id, date, room_id, user_id) VALUES ($1, $2, $3, $4, $5)";
const SHOP_ITEM: &str = "SELECT price, stock FROM shop_items WHERE item_id = $1";
const SHOP_CART_ADD: &str = "INSERT INTO shop_carts (user_id, item_id, qty) VALUES ($1, $2, $3) ON CONFLICT (user_id, item_id) DO UPDATE SET qty = shop_carts.qty + excluded.qty RETURNING qty";
const SHOP_CART_TAKE: &str = "DELETE FROM shop_carts WHERE user_id = $1 RETURNING item_id, qty";
const SHOP_TAKE: &str = "UPDATE shop_items SET stock = stock - $2 WHERE item_id = $1 AND stock >= $2 RETURNING price";
const SHOP_ORDER: &str = "INSERT INTO shop_orders (order_id, item_id, qty, total) VALUES ($1, $2, $3, $4)";
const RETWIS_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
const RETWIS_LAST: &str = "SELECT COALESCE(MAX(post_id), 0) FROM retwis_posts WHERE user_id = $1";
const RETWIS_PUT: &str = "INSERT INTO retwis_posts (user_id, post_id, at, body) VALUES ($1, $2, $3, $4)";
const RETWIS_FOLLOWERS: &str = "SELECT follower_id FROM retwis_followers WHERE user_id = $1";
const RETWIS_DELIVER: &str = "INSERT INTO retwis_timeline (user_id, at, author, post_id, body) SELECT f, $2::bigint, $3::bigint, $4::bigint, $5::text FROM unnest($1::bigint[]) AS f ON CONFLICT DO NOTHING";
const RETWIS_TIMELINE: &str = "SELECT at, author, post_id, body FROM retwis_timeline WHERE user_id = $1 ORDER BY at DESC LIMIT 10";

/// The statements each connection prepares once.
const STATEMENTS: &[&str] = &[
    WF_START, WF_STEP, WF_END, COUNTER_ADD, HOTEL_FREE, HOTEL_FIND, HOTEL_TAKE, HOTEL_CONFIRM, SHOP_ITEM, SHOP_CART_ADD, SHOP_CART_TAKE, SHOP_TAKE, SHOP_ORDER, RETWIS_LOCK,
    RETWIS_LAST, RETWIS_PUT, RETWIS_FOLLOWERS, RETWIS_DELIVER, RETWIS_TIMELINE,
];

/// The tables: the example applications' (as in Comb) and the workflow library's.
const SCHEMA: &str = "
DROP TABLE IF EXISTS wf_runs, wf_steps, counters, hotel_rooms, hotel_confirmations, shop_items, shop_orders, shop_carts,
    retwis_posts, retwis_follows, retwis_followers, retwis_timeline;
CREATE TABLE wf_runs (id TEXT PRIMARY KEY, name TEXT NOT NULL, input TEXT NOT NULL, status TEXT NOT NULL, output TEXT,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(), ended_at TIMESTAMPTZ);
CREATE TABLE wf_steps (run_id TEXT NOT NULL, step TEXT NOT NULL, output TEXT NOT NULL, PRIMARY KEY (run_id, step));
CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL);
CREATE TABLE hotel_rooms (hotel_id BIGINT NOT NULL, room_id BIGINT NOT NULL, date BIGINT NOT NULL, reserved_by BIGINT,
    PRIMARY KEY (hotel_id, date, room_id));
CREATE TABLE hotel_confirmations (hotel_id BIGINT NOT NULL, booking TEXT NOT NULL, date BIGINT NOT NULL, room_id BIGINT NOT NULL, user_id BIGINT NOT NULL, PRIMARY KEY (hotel_id, booking));
CREATE TABLE shop_items (item_id BIGINT PRIMARY KEY, price BIGINT NOT NULL, stock BIGINT NOT NULL);
CREATE TABLE shop_orders (order_id TEXT PRIMARY KEY, item_id BIGINT NOT NULL, qty BIGINT NOT NULL, total BIGINT NOT NULL);
CREATE TABLE shop_carts (user_id BIGINT NOT NULL, item_id BIGINT NOT NULL, qty BIGINT NOT NULL, PRIMARY KEY (user_id, item_id));
CREATE TABLE retwis_posts (user_id BIGINT NOT NULL, post_id BIGINT NOT NULL, at BIGINT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (user_id, post_id));
CREATE TABLE retwis_follows (user_id BIGINT NOT NULL, followee_id BIGINT NOT NULL, PRIMARY KEY (user_id, followee_id));
CREATE TABLE retwis_followers (user_id BIGINT NOT NULL, follower_id BIGINT NOT NULL, PRIMARY KEY (user_id, follower_id));
CREATE TABLE retwis_timeline (user_id BIGINT NOT NULL, at BIGINT NOT NULL, author BIGINT NOT NULL, post_id BIGINT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (user_id, at, author, post_id));";

/// One connection and its prepared statements.
struct Connection {
    client: tokio_postgres::Client,
    prepared: HashMap<&'static str, Statement>,
}

/// Connections to a PostgreSQL server, one per benchmark client.
pub(crate) struct Postgres {
    connections: Vec<Mutex<Connection>>,
    /// Keeps run ids apart from earlier runs' (the tables are dropped at setup, but a run id
    /// must not depend on it).
    nonce: u64,
    runs: AtomicU64,
}

/// A failed call: backpressure-like conflicts are retryable, anything else ends the run.
fn failure(err: tokio_postgres::Error) -> Failure {
    match err.code() {
        Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::TOO_MANY_CONNECTIONS => Failure::Retryable,
        _ => Failure::Fatal(err.into()),
    }
}

async fn connect(url: &str) -> anyhow::Result<Connection> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.with_context(|| format!("connecting to PostgreSQL at {url} (start one with benchmarks/postgres.sh start)"))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("PostgreSQL connection ended: {err}");
        }
    });
    Ok(Connection { client, prepared: HashMap::new() })
}

/// How many connections the server accepts from a user that is not a superuser: its
/// max_connections less superuser_reserved_connections.
async fn connection_slots(admin: &Connection) -> anyhow::Result<usize> {
    let row = admin
        .client
        .query_one("SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int", &[])
        .await
        .context("reading PostgreSQL's max_connections and superuser_reserved_connections")?;
    let slots: i32 = row.try_get(0)?;
    Ok(usize::try_from(slots).unwrap_or(0))
}

impl Postgres {
    /// Opens `connections` connections to `url`, creates the tables afresh and loads the
    /// workload's data.
    pub(crate) async fn setup(url: &str, connections: usize, workload: Workload, sizes: &Sizes) -> anyhow::Result<Postgres> {
        anyhow::ensure!(connections >= 1, "at least one connection is needed");
        let admin = connect(url).await?;
        let allowed = connection_slots(&admin).await?;
        // The admin connection stays open while the clients' open.
        anyhow::ensure!(
            connections < allowed,
            "the baseline needs {} connections to PostgreSQL at {url} (one per client, and one more), but it accepts {allowed} from a user that is not a \
             superuser (max_connections less superuser_reserved_connections): use fewer clients, or restart it with a larger max_connections \
             (benchmarks/postgres.sh sets it where it starts its server)",
            connections + 1
        );
        admin.client.batch_execute(SCHEMA).await.context("creating the baseline's tables")?;
        let (n, f, p) = (sizes.users, sizes.followees, sizes.posts);
        let load = match workload {
            Workload::Counter => String::new(),
            Workload::Hotel => format!(
                "INSERT INTO hotel_rooms (hotel_id, room_id, date) SELECT h, r, d FROM generate_series(0, {}) h, generate_series(0, {}) r, generate_series(0, {}) d;",
                sizes.hotels - 1,
                sizes.rooms - 1,
                sizes.dates - 1
            ),
            Workload::Shop => format!("INSERT INTO shop_items (item_id, price, stock) SELECT i, {PRICE}, {} FROM generate_series(0, {}) i;", sizes.stock, sizes.items - 1),
            // The follow graph and posts of `retwis_load` (examples/src/retwis.rs): user u
            // follows u+1..u+f (mod n); post p of author a was written at p * n + a.
            Workload::Retwis => format!(
                "INSERT INTO retwis_follows SELECT u, (u + k) % {n} FROM generate_series(0, {n} - 1) u, generate_series(1, {f}) k;
                 INSERT INTO retwis_followers SELECT u, ((u - k) % {n} + {n}) % {n} FROM generate_series(0, {n} - 1) u, generate_series(1, {f}) k;
                 INSERT INTO retwis_posts SELECT u, p, p * {n} + u, 'post ' || p FROM generate_series(0, {n} - 1) u, generate_series(1, {p}) p;
                 INSERT INTO retwis_timeline SELECT ((u - k) % {n} + {n}) % {n}, p * {n} + u, u, p, 'post ' || p
                     FROM generate_series(0, {n} - 1) u, generate_series(1, {f}) k, generate_series(1, {p}) p;"
            ),
        };
        admin.client.batch_execute(&format!("{load} ANALYZE;")).await.context("loading the baseline's data")?;
        // The load leaves gigabytes of dirty pages that a spread checkpoint would write during
        // the measured runs (slowing every fsync of the first points); write them now, as an
        // operator would after a bulk load. Needs a superuser (or pg_checkpoint); without one
        // the runs go on as they are.
        if let Err(err) = admin.client.batch_execute("CHECKPOINT").await {
            eprintln!("the baseline's data is loaded but not checkpointed ({err}): its first runs may share the disk with PostgreSQL's checkpoint");
        }
        let mut all = Vec::with_capacity(connections);
        for i in 0..connections {
            let mut connection = connect(url).await.with_context(|| format!("opening the baseline's connection {} of {connections}", i + 1))?;
            for sql in STATEMENTS {
                let statement = connection.client.prepare(sql).await.with_context(|| format!("preparing {sql}"))?;
                connection.prepared.insert(sql, statement);
            }
            all.push(Mutex::new(connection));
        }
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
        Ok(Postgres { connections: all, nonce, runs: AtomicU64::new(0) })
    }

    /// Runs one operation as a recorded workflow on connection `client`.
    pub(crate) async fn run(&self, client: usize, op: &Op) -> Result<Outcome, Failure> {
        let mut guard = self.connections[client % self.connections.len()].lock().await;
        let Connection { client, prepared } = &mut *guard;
        let st = |sql: &str| &prepared[sql];
        let id = format!("{}-{}", self.nonce, self.runs.fetch_add(1, Ordering::Relaxed));
        let (name, input) = op.workflow();
        client.execute(st(WF_START), &[&id, &name, &input.to_string()]).await.map_err(failure)?;
        let (status, output, outcome) = match op {
            Op::CounterAdd { id: key } => {
                let tx = client.transaction().await.map_err(failure)?;
                let n: i64 = tx.query_one(st(COUNTER_ADD), &[key]).await.map_err(failure)?.get(0);
                let output = json!({ "id": key, "n": n });
                tx.execute(st(WF_STEP), &[&id, &"add", &output.to_string()]).await.map_err(failure)?;
                tx.commit().await.map_err(failure)?;
                ("succeeded", output, Outcome::Counted)
            }
            Op::HotelSearch { hotel, date } => {
                let tx = client.transaction().await.map_err(failure)?;
                let rooms: Vec<i64> = tx.query(st(HOTEL_FREE), &[hotel, date]).await.map_err(failure)?.iter().map(|r| r.get(0)).collect();
                let output = json!({ "rooms": rooms });
                tx.execute(st(WF_STEP), &[&id, &"search", &output.to_string()]).await.map_err(failure)?;
                tx.commit().await.map_err(failure)?;
                ("succeeded", output, Outcome::Done)
            }
            Op::HotelBook { hotel, date, user, booking } => {
                let tx = client.transaction().await.map_err(failure)?;
                let room: Option<i64> = tx.query_opt(st(HOTEL_FIND), &[hotel, date]).await.map_err(failure)?.map(|r| r.get(0));
                if let Some(room) = room {
                    let taken = tx.execute(st(HOTEL_TAKE), &[hotel, date, &room, user]).await.map_err(failure)?;
                    if taken != 1 {
                        return Err(Failure::Fatal(anyhow::anyhow!("room {room} of hotel {hotel} on {date} was locked as free but not taken")));
                    }
                }
                tx.execute(st(WF_STEP), &[&id, &"find", &json!({ "room": room }).to_string()]).await.map_err(failure)?;
                tx.execute(st(WF_STEP), &[&id, &"take", &json!({ "room": room }).to_string()]).await.map_err(failure)?;
                tx.commit().await.map_err(failure)?;
                let tx = client.transaction().await.map_err(failure)?;
                if let Some(room) = room {
                    tx.execute(st(HOTEL_CONFIRM), &[booking, hotel, date, &room, user]).await.map_err(failure)?;
                }
                tx.execute(st(WF_STEP), &[&id, &"confirm", &json!({ "confirmed": room.is_some() }).to_string()]).await.map_err(failure)?;
                tx.commit().await.map_err(failure)?;
                ("succeeded", json!({ "room": room, "confirmed": room.is_some() }), if room.is_some() { Outcome::Booked { user: *user } } else { Outcome::NoRoom })
            }
            Op::ShopBrowse { item } => {
                let tx = client.transaction().await.map_err(failure)?;
                let row = tx.query_opt(st(SHOP_ITEM), &[item]).await.map_err(failure)?;
                let output = row.map_or(json!({ "item": null }), |r| json!({ "item": item, "price": r.get::<_, i64>(0), "stock": r.get::<_, i64>(1) }));
                tx.execute(st(WF_STEP), &[&id, &"item", &output.to_string()]).await.map_err(failure)?;
                tx.commit().await.map_err(failure)?;
                ("succeeded", output, Outcome::Done)
            }
            Op::ShopCartAdd { user, item, qty } => {
                let tx = client.transaction().await.map_err(failure)?;
                let in_cart: i64 = tx.query_one(st(SHOP_CART_ADD), &[user, item, qty]).await.map_err(failure)?.get(0);
                let output = json!({ "user": user, "item": item, "qty": in_cart });
                tx.execute(st(WF_STEP), &[&id, &"add", &output.to_string()]).await.map_err(failure)?;
                tx.commit().await.map_err(failure)?;
                ("succeeded", output, Outcome::Done)
            }
            Op::ShopCheckout { user, order } => {
                let tx = client.transaction().await.map_err(failure)?;
                let mut lines: Vec<(i64, i64)> = tx.query(st(SHOP_CART_TAKE), &[user]).await.map_err(failure)?.iter().map(|r| (r.get(0), r.get(1))).collect();
                // Items in key order: two checkouts never wait on each other in a cycle.
                lines.sort_unstable();
                let mut priced = Vec::with_capacity(lines.len());
                for &(item, qty) in &lines {
                    match tx.query_opt(st(SHOP_TAKE), &[&item, &qty]).await.map_err(failure)? {
                        Some(row) => priced.push((item, qty, row.get::<_, i64>(0))),
                        None => break,
                    }
                }
                if priced.len() < lines.len() {
                    tx.rollback().await.map_err(failure)?;
                    let error = json!(format!("item {} has fewer than {} in stock", lines[priced.len()].0, lines[priced.len()].1));
                    client.execute(st(WF_END), &[&id, &"failed", &error.to_string()]).await.map_err(failure)?;
                    return Ok(Outcome::Refused);
                }
                let (mut units, mut total) = (0, 0);
                for &(item, qty, price) in &priced {
                    tx.execute(st(SHOP_ORDER), &[&format!("{order}/{item}"), &item, &qty, &(price * qty)]).await.map_err(failure)?;
                    units += qty;
                    total += price * qty;
                }
                let cart = json!({ "user": user, "lines": lines.iter().map(|(item, qty)| json!({ "item": item, "qty": qty })).collect::<Vec<_>>() });
                let take = json!({ "lines": priced.iter().map(|(item, qty, price)| json!({ "item": item, "qty": qty, "price": price })).collect::<Vec<_>>(), "total": total });
                let recorded = json!({ "lines": priced.len(), "units": units });
                for (step, output) in [("cart", &cart), ("take", &take), ("order", &recorded)] {
                    tx.execute(st(WF_STEP), &[&id, &step, &output.to_string()]).await.map_err(failure)?;
                }
                tx.commit().await.map_err(failure)?;
                let output = json!({ "order": order, "lines": priced.len(), "units": units, "total": total });
                ("succeeded", output, Outcome::CheckedOut { lines: priced.len() as i64, units })
            }
            Op::RetwisPost { user, at, body } => {
                let tx = client.transaction().await.map_err(failure)?;
                // Posts of one user are numbered: their posts wait on each other.
                tx.execute(st(RETWIS_LOCK), &[user]).await.map_err(failure)?;
                let post: i64 = tx.query_one(st(RETWIS_LAST), &[user]).await.map_err(failure)?.get::<_, i64>(0) + 1;
                tx.execute(st(RETWIS_PUT), &[user, &post, at, body]).await.map_err(failure)?;
                let followers: Vec<i64> = tx.query(st(RETWIS_FOLLOWERS), &[user]).await.map_err(failure)?.iter().map(|r| r.get(0)).collect();
                let stored = json!({ "user": user, "post": post, "at": at, "body": body, "followers": followers });
                tx.execute(st(WF_STEP), &[&id, &"post", &stored.to_string()]).await.map_err(failure)?;
                tx.commit().await.map_err(failure)?;
                let tx = client.transaction().await.map_err(failure)?;
                let delivered = tx.execute(st(RETWIS_DELIVER), &[&followers, at, user, &post, body]).await.map_err(failure)?;
                tx.execute(st(WF_STEP), &[&id, &"deliver", &json!({ "delivered": delivered }).to_string()]).await.map_err(failure)?;
                tx.commit().await.map_err(failure)?;
                ("succeeded", json!({ "post": post, "delivered": delivered }), Outcome::Posted)
            }
            Op::RetwisTimeline { user } => {
                let tx = client.transaction().await.map_err(failure)?;
                let posts: Vec<Value> = tx
                    .query(st(RETWIS_TIMELINE), &[user])
                    .await
                    .map_err(failure)?
                    .iter()
                    .map(|r| json!({ "at": r.get::<_, i64>(0), "author": r.get::<_, i64>(1), "post": r.get::<_, i64>(2), "body": r.get::<_, String>(3) }))
                    .collect();
                let output = json!({ "posts": posts });
                tx.execute(st(WF_STEP), &[&id, &"read", &output.to_string()]).await.map_err(failure)?;
                tx.commit().await.map_err(failure)?;
                ("succeeded", output, Outcome::Done)
            }
        };
        client.execute(st(WF_END), &[&id, &status, &output.to_string()]).await.map_err(failure)?;
        Ok(outcome)
    }

    /// The answers to the workload's check queries.
    pub(crate) async fn answers(&self, workload: Workload, sizes: &Sizes) -> anyhow::Result<Answers> {
        let connection = self.connections[0].lock().await;
        let mut answers = Answers::new();
        for query in check_queries(workload) {
            for (from, to) in query.ranges(sizes) {
                let row = if query.by_users { connection.client.query_one(query.sql, &[&from, &to]).await } else { connection.client.query_one(query.sql, &[]).await };
                let row = row.with_context(|| query.sql)?;
                for column in query.columns {
                    *answers.entry(format!("{}.{column}", query.name)).or_default() += row.try_get::<_, i64>(*column).with_context(|| format!("{}: column {column}", query.sql))?;
                }
            }
        }
        Ok(answers)
    }
}
