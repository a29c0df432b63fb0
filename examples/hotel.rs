//! One application end to end: a server embedding the hotel functions (compiled in), and a
//! client that opens a hotel and books rooms exactly once.
//!
//! ```sh
//! cargo run --example hotel
//! ```

use std::time::Duration;

use comb_client::Client;
use comb_frontend::Server;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The server: the hotel application's tables, functions and workflows, over one data
    // directory. In a service of your own, `Function::new(...)` values go on the builder.
    let server = comb_examples::hotel::APP.install(Server::builder().data_dir(dir.path())).build().await?;
    let listening = server.listen("127.0.0.1:0".parse()?).await?;
    let client = Client::builder(format!("http://{}", listening.local_addr())).timeout(Duration::from_secs(10)).connect().await?;

    let opened: Value = client.invoke("hotel_open", &json!({ "hotel": 1, "rooms": 3, "dates": 1 })).await?;
    println!("opened: {opened}");

    // Four guests want a room on date 0; there are three. Finding a free room and taking it
    // are one transaction, so no room is given twice.
    let mut bookings = Vec::new();
    for user in 0..4 {
        let client = client.clone();
        bookings.push(tokio::spawn(async move { client.invoke::<Value>("reserve", &json!({ "hotel": 1, "date": 0, "user": user })).id(format!("booking-{user}")).run().await }));
    }
    for booking in bookings {
        let run = booking.await??;
        println!("{}: {:?} {}", run.id, run.status, run.output.unwrap_or_default());
    }

    // Asking again with an id that ran returns its outcome and books nothing.
    let again = client.invoke::<Value>("reserve", &json!({ "hotel": 1, "date": 0, "user": 0 })).id("booking-0").run().await?;
    println!("booking-0 again: {} (deduplicated: {})", again.output.unwrap_or_default(), again.deduplicated);

    listening.shutdown().await?;
    server.close().await?;
    Ok(())
}
