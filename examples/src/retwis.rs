//! Retwis, a small Twitter: users post and read their latest posts.

use comb_backend::Function;
use serde_json::json;

use crate::{App, int};

/// The retwis application.
pub const APP: App = App {
    name: "retwis",
    schema: "
CREATE TABLE IF NOT EXISTS retwis_posts (user_id BIGINT NOT NULL, post_id BIGINT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (user_id, post_id));
CREATE TABLE IF NOT EXISTS retwis_follows (user_id BIGINT NOT NULL, follower_id BIGINT NOT NULL, PRIMARY KEY (user_id, follower_id));",
    functions,
    workflows: &[
        r#"{"name": "post", "steps": [{"id": "post", "function": "retwis_post", "input": "$input"}], "output": "$post"}"#,
        r#"{"name": "follow", "steps": [{"id": "follow", "function": "retwis_follow", "input": "$input"}], "output": "$follow"}"#,
        r#"{"name": "timeline", "steps": [{"id": "read", "function": "retwis_latest", "input": "$input"}], "output": "$read"}"#,
    ],
};

fn functions() -> Vec<Function> {
    vec![
        Function::new("retwis_post")
            .statement("last", "SELECT max(post_id) FROM retwis_posts WHERE user_id = $1")
            .statement("put", "INSERT INTO retwis_posts (user_id, post_id, body) VALUES ($1, $2, $3)")
            .partition_by("user")
            .run(|tx, input| {
                let user = int(&input, "user")?;
                let body = input.get("body").and_then(serde_json::Value::as_str).ok_or("input field \"body\" must be a string")?.to_owned();
                let last: Option<i64> = tx.query_one("last", (user,))?;
                let post = last.map_or(1, |p| p + 1);
                tx.execute("put", (user, post, body))?;
                Ok(json!({ "user": user, "post": post }))
            }),
        Function::new("retwis_follow")
            .statement("put", "INSERT INTO retwis_follows (user_id, follower_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .partition_by("user")
            .run(|tx, input| {
                let added = tx.execute("put", (int(&input, "user")?, int(&input, "follower")?))?;
                Ok(json!({ "added": added == 1 }))
            }),
        Function::new("retwis_latest")
            .statement("latest", "SELECT post_id, body FROM retwis_posts WHERE user_id = $1 ORDER BY post_id DESC LIMIT 10")
            .partition_by("user")
            .run(|tx, input| {
                let posts: Vec<(i64, String)> = tx.query_as("latest", (int(&input, "user")?,))?;
                Ok(json!({ "posts": posts.into_iter().map(|(post, body)| json!({ "post": post, "body": body })).collect::<Vec<_>>() }))
            }),
    ]
}
