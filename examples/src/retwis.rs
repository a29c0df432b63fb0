//! Retwis, a small Twitter, with timelines built on write (fan-out), as the Redis original.
//!
//! - `post` stores a user's post on their partition, then delivers it to the timeline of
//!   every follower (a second, multi-partition transaction): two recorded units, so a post
//!   is delivered exactly once even across a crash between them.
//! - `timeline` reads the latest posts of the accounts a user follows: one partition, one
//!   range scan, forwards (the timeline's key declares `at DESC`).
//! - `follow` adds a follow (from then on; earlier posts are not delivered).
//! - `retwis_load` creates one user of a regular follow graph (user `u` follows the next
//!   `followees` users, modulo `users`) with `posts` posts each, timeline included: every
//!   row it writes is on `u`'s partition, for benchmarks.

use comb_backend::{BoxError, Function};
use serde::Deserialize;
use serde_json::json;

use crate::{App, int};

/// Most followers one post is delivered to; a post by a user with more is refused.
pub const FAN_OUT_MAX: usize = 10_000;

/// Posts a timeline read returns.
pub const TIMELINE_POSTS: i64 = 10;

/// Bounds of one `retwis_load` call: followees and posts per user, and their product (the
/// timeline rows it writes).
pub const LOAD_FOLLOWEES_MAX: i64 = 1_000;
pub const LOAD_POSTS_MAX: i64 = 1_000;
pub const LOAD_TIMELINE_MAX: i64 = 50_000;

/// The retwis application.
pub const APP: App = App {
    name: "retwis",
    schema: "
CREATE TABLE IF NOT EXISTS retwis_posts (user_id BIGINT NOT NULL, post_id BIGINT NOT NULL, at BIGINT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (user_id, post_id));
CREATE TABLE IF NOT EXISTS retwis_follows (user_id BIGINT NOT NULL, followee_id BIGINT NOT NULL, PRIMARY KEY (user_id, followee_id));
CREATE TABLE IF NOT EXISTS retwis_followers (user_id BIGINT NOT NULL, follower_id BIGINT NOT NULL, PRIMARY KEY (user_id, follower_id));
CREATE TABLE IF NOT EXISTS retwis_timeline (
    user_id BIGINT NOT NULL, at BIGINT NOT NULL, author BIGINT NOT NULL, post_id BIGINT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (user_id, at DESC, author, post_id)
);",
    functions,
    workflows: &[
        r#"{"name": "retwis_load", "steps": [{"id": "load", "function": "retwis_load_user", "input": "$input"}], "output": "$load"}"#,
        r#"{"name": "post",
            "steps": [
              {"id": "post", "function": "retwis_post", "input": "$input"},
              {"id": "deliver", "function": "retwis_deliver", "input": "$post"}
            ],
            "output": {"post": "$post.post", "delivered": "$deliver.delivered"}}"#,
        r#"{"name": "follow", "steps": [{"id": "follow", "function": "retwis_follow", "input": "$input"}], "output": "$follow"}"#,
        r#"{"name": "timeline", "steps": [{"id": "read", "function": "retwis_timeline", "input": "$input"}], "output": "$read"}"#,
    ],
};

#[derive(Debug, Deserialize)]
struct Load {
    user: i64,
    users: i64,
    followees: i64,
    posts: i64,
}

/// A stored post and who it goes to: the output of `retwis_post`, the input of
/// `retwis_deliver`.
#[derive(Debug, Deserialize)]
struct Delivery {
    user: i64,
    post: i64,
    at: i64,
    body: String,
    followers: Vec<i64>,
}

/// The body of a loaded post.
fn loaded_body(post: i64) -> String {
    format!("post {post}")
}

fn functions() -> Vec<Function> {
    vec![
        Function::new("retwis_load_user")
            .statement("follow", "INSERT INTO retwis_follows (user_id, followee_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .statement("follower", "INSERT INTO retwis_followers (user_id, follower_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .statement("post", "INSERT INTO retwis_posts (user_id, post_id, at, body) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .statement("deliver", "INSERT INTO retwis_timeline (user_id, at, author, post_id, body) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
            .partition_by("user")
            .run_typed(|tx, Load { user, users, followees, posts }| -> Result<serde_json::Value, BoxError> {
                if !(0..users).contains(&user) || !(0..users).contains(&followees) || !(0..=LOAD_FOLLOWEES_MAX).contains(&followees) || !(0..=LOAD_POSTS_MAX).contains(&posts) || followees * posts > LOAD_TIMELINE_MAX {
                    return Err(format!(
                        "retwis_load takes 0 <= user < users, followees < users, followees <= {LOAD_FOLLOWEES_MAX}, posts <= {LOAD_POSTS_MAX} and followees x posts <= {LOAD_TIMELINE_MAX}"
                    )
                    .into());
                }
                // Post `p` of user `a` was written at `p * users + a`: a global order.
                for k in 1..=followees {
                    let (followee, follower) = ((user + k) % users, (user - k).rem_euclid(users));
                    tx.execute("follow", (user, followee))?;
                    tx.execute("follower", (user, follower))?;
                    for p in 1..=posts {
                        tx.execute("deliver", (user, p * users + followee, followee, p, loaded_body(p)))?;
                    }
                }
                for p in 1..=posts {
                    tx.execute("post", (user, p, p * users + user, loaded_body(p)))?;
                }
                Ok(json!({ "user": user }))
            }),
        Function::new("retwis_post")
            .statement("last", "SELECT max(post_id) FROM retwis_posts WHERE user_id = $1")
            .statement("put", "INSERT INTO retwis_posts (user_id, post_id, at, body) VALUES ($1, $2, $3, $4)")
            .statement("followers", "SELECT follower_id FROM retwis_followers WHERE user_id = $1 LIMIT $2")
            .partition_by("user")
            .run(|tx, input| {
                let (user, at) = (int(&input, "user")?, int(&input, "at")?);
                let body = input.get("body").and_then(serde_json::Value::as_str).ok_or("input field \"body\" must be a string")?.to_owned();
                let last: Option<i64> = tx.query_one("last", (user,))?;
                let post = last.map_or(1, |p| p + 1);
                tx.execute("put", (user, post, at, body.as_str()))?;
                let followers: Vec<i64> = tx.query_as("followers", (user, FAN_OUT_MAX as i64 + 1))?;
                if followers.len() > FAN_OUT_MAX {
                    return Err(format!("user {user} has more than {FAN_OUT_MAX} followers: posts are delivered to at most that many").into());
                }
                Ok(json!({ "user": user, "post": post, "at": at, "body": body, "followers": followers }))
            }),
        // No partition key: the followers lie on any partition.
        Function::new("retwis_deliver")
            .statement("deliver", "INSERT INTO retwis_timeline (user_id, at, author, post_id, body) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
            .run_typed(|tx, d: Delivery| -> Result<serde_json::Value, BoxError> {
                if d.followers.len() > FAN_OUT_MAX {
                    return Err(format!("a post is delivered to at most {FAN_OUT_MAX} followers").into());
                }
                let mut delivered = 0;
                for follower in &d.followers {
                    delivered += tx.execute("deliver", (*follower, d.at, d.user, d.post, d.body.as_str()))?;
                }
                Ok(json!({ "delivered": delivered }))
            }),
        Function::new("retwis_follow")
            .statement("follow", "INSERT INTO retwis_follows (user_id, followee_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .statement("follower", "INSERT INTO retwis_followers (user_id, follower_id) VALUES ($2, $1) ON CONFLICT DO NOTHING")
            .run(|tx, input| {
                let (user, followee) = (int(&input, "user")?, int(&input, "followee")?);
                let added = tx.execute("follow", (user, followee))?;
                tx.execute("follower", (user, followee))?;
                Ok(json!({ "added": added == 1 }))
            }),
        Function::new("retwis_timeline")
            .statement("latest", "SELECT at, author, post_id, body FROM retwis_timeline WHERE user_id = $1 ORDER BY at DESC LIMIT $2")
            .partition_by("user")
            .run(|tx, input| {
                let posts: Vec<(i64, i64, i64, String)> = tx.query_as("latest", (int(&input, "user")?, TIMELINE_POSTS))?;
                let posts: Vec<_> = posts.into_iter().map(|(at, author, post, body)| json!({ "at": at, "author": author, "post": post, "body": body })).collect();
                Ok(json!({ "posts": posts }))
            }),
    ]
}
